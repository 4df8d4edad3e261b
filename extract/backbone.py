"""Loading the frozen Stable Diffusion backbone from a hub id, a local folder, a single file or `tiny`."""
from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hairdiff.core.errors import ModelNotFoundError
from hairdiff.core.files import atomic_write_json
from hairdiff.core.hub import hub_reachable
from hairdiff.core.paths import models_dir

HOW = "pass a local diffusers folder with --model /path/to/stable-diffusion-v1-3, or --model tiny"
# Inside `sharing_backbones()`: the backbones loaded so far, by what they are (identity: content hash or
# resolved revision), device and dtype. A context variable, so the sharing is this thread's and this block's
# only: code outside it (or a thread of an in-process Dask worker) always gets a backbone of its own.
_SHARED: ContextVar[dict | None] = ContextVar("hairdiff_shared_backbones", default=None)


@contextmanager
def sharing_backbones():
    """Within the block, load_backbone gives the backbone it loaded already for the same model, device and
    dtype: a sweep or reproduce extracts several stores with one model, and loading SD takes seconds each time.
    Extractors register their hooks only for the duration of a call, so they may share one backbone; nothing
    in the block may change the backbone's modules. Released (for the garbage collector) when the block ends."""
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


@dataclass
class Backbone:
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: object
    identity: dict
    device: torch.device
    dtype: torch.dtype
    extra: dict = field(default_factory=dict)


def _freeze(*modules) -> None:
    for m in modules:
        m.requires_grad_(False)
        m.eval()


def _content_hash(files: list[Path]) -> str:
    """sha256 over weight files, cached by (path, size, mtime) so a 4 GB model is hashed once."""
    memo_path = models_dir() / "content-hashes.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    h = hashlib.sha256()
    for f in sorted(files):
        st = f.stat()
        key = f"{f.resolve()}:{st.st_size}:{int(st.st_mtime)}"
        if key not in memo:
            fh = hashlib.sha256()
            with open(f, "rb") as fp:
                for block in iter(lambda: fp.read(1 << 22), b""):
                    fh.update(block)
            memo[key] = fh.hexdigest()
        h.update(f.name.encode() + memo[key].encode())
    try:
        atomic_write_json(memo_path, memo, indent=None)
    except OSError:
        pass  # a read-only models folder only costs re-hashing next time
    return h.hexdigest()


def _weight_files(folder: Path) -> list[Path]:
    exts = (".safetensors", ".bin", ".ckpt", ".json", ".txt")
    return [p for p in folder.rglob("*") if p.is_file() and p.suffix in exts]


def _load_folder(source: str, revision: str | None, dtype: torch.dtype, local: bool):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.utils import logging as dlog
    from transformers import CLIPTextModel, CLIPTokenizer
    from transformers.utils import logging as tlog

    dlog.set_verbosity_error()  # load-time chatter would bury our progress output
    tlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()

    kw = {"revision": revision} if revision else {}
    if local:
        kw["local_files_only"] = True
    unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype, **kw)
    vae = AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype, **kw)
    text = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", torch_dtype=dtype, **kw)
    tok = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **kw)
    # Any SD scheduler config works here: we only use its noise schedule (add_noise at one timestep).
    sched = DDPMScheduler.from_pretrained(source, subfolder="scheduler", **kw)
    return unet, vae, text, tok, sched


def _hub_revision(model: str, revision: str | None) -> str | None:
    """The commit hash of the snapshot in the local HF cache, or None when it is not cached."""
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(model, revision=revision, local_files_only=True,
                                 allow_patterns=["model_index.json"])
        return Path(path).name  # snapshots/<commit>
    except Exception:  # (not cached, or no hub metadata) the revision is unknown: the caller hashes the files
        return None


def load_backbone(model: str, *, device="cpu", dtype: torch.dtype | None = None, revision: str | None = None,
                  reuse: bool = True) -> Backbone:
    """The frozen backbone of `model` on `device` in `dtype`. Inside `sharing_backbones()` the one loaded already
    there for the same model (the same content or resolved revision), device and dtype, unless reuse=False (a
    backbone the caller will change: torch.compile of its blocks)."""
    device = torch.device(device)
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    if model == "tiny":
        from hairdiff.extract.tiny import VERSION, tiny_model_path

        path = tiny_model_path()
        identity = {"kind": "tiny", "name": VERSION, "content_sha256": _content_hash(_weight_files(path))}
        source, local = str(path), True
    elif Path(model).is_dir():
        path = Path(model)
        identity = {"kind": "local", "name": path.name, "content_sha256": _content_hash(_weight_files(path))}
        source, local = str(path), True
    elif model.endswith((".safetensors", ".ckpt")):
        return _load_single_file(Path(model), device, dtype)
    elif model.startswith((".", "/", "~")) or os.sep in model and not model.count("/") == 1:
        raise ModelNotFoundError(f"model {model!r} not found: no such folder or file; {HOW}")
    else:
        cached = _hub_revision(model, revision)
        if cached is None and not hub_reachable():
            # huggingface_hub would retry for ~25 s per file before failing the same way
            raise ModelNotFoundError(f"model {model!r} is not in the local Hugging Face cache and the hub is "
                                     f"unreachable; {HOW}")
        identity = {"kind": "hub", "name": model, "revision": cached or revision}
        source, local = model, cached is not None
    shared = _SHARED.get() if reuse else None
    key = (json.dumps(identity, sort_keys=True), str(device), str(dtype))
    if shared is not None and key in shared:
        return shared[key]
    try:
        unet, vae, text, tok, sched = _load_folder(source, revision, dtype, local)
    except (OSError, ValueError, EnvironmentError) as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ModelNotFoundError(f"model {model!r} could not be loaded ({first}); {HOW}") from None
    backbone = _finish(unet, vae, text, tok, sched, identity, device, dtype)
    if shared is not None:
        shared.clear()  # one at a time: each is gigabytes on a GPU
        shared[key] = backbone
    return backbone


def _load_single_file(path: Path, device, dtype) -> Backbone:
    if not path.is_file():
        raise ModelNotFoundError(f"model file {path} not found; {HOW}")
    try:
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_single_file(str(path), torch_dtype=dtype, local_files_only=True,
                                                        safety_checker=None)
    except Exception as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ModelNotFoundError(f"single-file model {path} could not be loaded offline ({first}); convert it "
                                 f"to a diffusers folder once with network access, or {HOW}") from None
    identity = {"kind": "file", "name": path.name, "content_sha256": _content_hash([path])}
    return _finish(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler, identity, device, dtype)


def _finish(unet, vae, text, tok, sched, identity, device, dtype) -> Backbone:
    _freeze(unet, vae, text)
    unet.to(device=device, dtype=dtype, memory_format=torch.channels_last)
    vae.to(device=device, dtype=dtype, memory_format=torch.channels_last)
    text.to(device=device, dtype=dtype)
    return Backbone(unet, vae, text, tok, sched, identity, device, dtype)
