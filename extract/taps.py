"""Which activations become features: the `unet` and `odise` tap sets, or explicit module names.

A tap name is `<network>.<module path>` with an optional `:input` suffix (the module's input instead of
its output), e.g. `unet.up_blocks.1` or `vae.decoder.up_blocks.1.resnets.2:input`. Stride and channels are
measured by a dry run, never assumed.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from hairdiff.core.errors import UsageError

if TYPE_CHECKING:  # validating --taps needs no torch
    import torch

UNET = ["unet.up_blocks.0", "unet.up_blocks.1", "unet.up_blocks.2", "unet.up_blocks.3"]
# NVlabs/ODISE: inputs of VAE-encoder res-blocks 5 and 7, of LDM UNet output blocks 2, 5, 8, 11
# (diffusers up_blocks[i].resnets[j] with 3i+j) and of VAE-decoder res-blocks 2 and 5.
ODISE = [
    "vae.encoder.down_blocks.2.resnets.1:input", "vae.encoder.down_blocks.3.resnets.1:input",
    "unet.up_blocks.0.resnets.2:input", "unet.up_blocks.1.resnets.2:input",
    "unet.up_blocks.2.resnets.2:input", "unet.up_blocks.3.resnets.2:input",
    "vae.decoder.up_blocks.0.resnets.2:input", "vae.decoder.up_blocks.1.resnets.2:input",
]
TAP_SETS = {"unet": UNET, "odise": ODISE}


@dataclass(frozen=True)
class Tap:
    name: str
    network: str  # "unet" | "vae_encoder" | "vae_decoder"
    module_path: str  # path below the network's root module (unet or vae)
    kind: str  # "input" | "output"
    stride: int = 0
    channels: int = 0


def parse_tap(name: str) -> Tap:
    path, _, suffix = name.partition(":")
    if suffix not in ("", "input", "output"):
        raise UsageError(f"--taps: tap {name!r}: the suffix after ':' must be 'input' or 'output'")
    root, _, module = path.partition(".")
    if root == "unet" and module:
        network = "unet"
    elif root == "vae" and module.startswith("encoder."):
        network = "vae_encoder"
    elif root == "vae" and module.startswith("decoder."):
        network = "vae_decoder"
    else:
        raise UsageError(f"--taps: tap {name!r}: use unet, odise, or module names that start with unet., "
                         "vae.encoder. or vae.decoder. (e.g. unet.up_blocks.1 or vae.encoder.down_blocks.2.resnets.1:input)")
    return Tap(name, network, module, suffix or "output")


def module_of(backbone, tap: Tap) -> torch.nn.Module:
    root = backbone.unet if tap.network == "unet" else backbone.vae
    try:
        return root.get_submodule(tap.module_path)
    except AttributeError:
        raise UsageError(f"--taps: tap {tap.name!r}: the model has no module {tap.module_path!r} (print the "
                         f"model's named_modules() for the names it has)") from None


def check_tap_spec(spec: str) -> list[Tap]:
    """The taps a --taps value names, checked for syntax (no model needed); UsageError when malformed."""
    names = TAP_SETS.get(spec) or [s.strip() for s in str(spec).split(",") if s.strip()]
    if not names:
        raise UsageError("--taps is empty: use unet, odise or a comma-separated list of module names")
    if len(set(names)) != len(names):
        raise UsageError(f"--taps {spec!r} names a tap twice")
    return [parse_tap(n) for n in names]


def resolve_taps(spec: str, backbone) -> list[Tap]:
    taps = check_tap_spec(spec)
    for t in taps:
        module_of(backbone, t)
    return taps


def with_geometry(taps: list[Tap], shapes: dict[str, tuple], resolution: int) -> list[Tap]:
    return [replace(t, channels=shapes[t.name][1], stride=resolution // shapes[t.name][2]) for t in taps]
