"""How the frozen backbone is run fast: memory layout, attention kernel, compilation, batch size.

None of these changes what is computed beyond float rounding, so none is part of a store's fingerprint;
each is measured on its own in bench/NOTES.md.
"""
from __future__ import annotations

import time
import warnings

import torch

AUTO_CAP = 128  # the largest batch `--batch-size auto` tries: beyond it the GPU is long full
CPU_AUTO = 8  # on a CPU "the largest batch that fits" is the RAM: a fixed batch instead


def set_channels_last(backbone, on: bool) -> None:
    fmt = torch.channels_last if on else torch.contiguous_format
    backbone.unet.to(memory_format=fmt)
    backbone.vae.to(memory_format=fmt)


def set_sdpa(backbone, on: bool) -> None:
    """PyTorch's scaled_dot_product_attention (flash / memory-efficient kernels) or the plain matmul-softmax."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    for model in (backbone.unet, backbone.vae):
        model.set_attn_processor(AttnProcessor2_0() if on else AttnProcessor())


def compile_blocks(backbone) -> int:
    """torch.compile the forward of every resnet and transformer block, not the whole networks: the tap hooks
    (and the early stop after the last tap) stay in eager Python around the compiled blocks."""
    import torch._dynamo
    from diffusers.models.resnet import ResnetBlock2D
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    # One compiled graph per distinct block shape: SD 1.x has more resnet shapes than dynamo's default
    # limit of 8, past which it would quietly fall back to eager.
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(64, getattr(torch._dynamo.config, name)))
    n = 0
    for model in (backbone.unet, backbone.vae):
        for m in model.modules():
            if isinstance(m, (ResnetBlock2D, Transformer2DModel)):
                m.forward = torch.compile(m.forward, dynamic=False)
                n += 1
    return n


def warm_up(extractor, batch_size: int) -> float:
    """One call at the working batch size (compilation happens here); returns its seconds."""
    r = extractor.resolution
    x = torch.zeros((batch_size, 3, r, r), device=extractor.bb.device, dtype=extractor.bb.dtype)
    t = time.perf_counter()
    extractor(x)
    if extractor.bb.device.type == "cuda":
        torch.cuda.synchronize(extractor.bb.device)
    return time.perf_counter() - t


def probe_batch_size(extractor, cap: int = AUTO_CAP) -> int:
    """The largest power-of-two batch (up to `cap`) that runs without running out of device memory,
    found once by doubling; half of the first that fails, with a warning when even 1 fails later."""
    if extractor.bb.device.type != "cuda":
        return CPU_AUTO
    r, best, b = extractor.resolution, 0, 1
    # No cuDNN autotuning while probing: it would benchmark every probed batch size's convolutions.
    tuned, torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark, False
    while b <= cap:
        try:
            x = torch.zeros((b, 3, r, r), device=extractor.bb.device, dtype=extractor.bb.dtype)
            feats = extractor(x)
            del x, feats
            best, b = b, b * 2
        except torch.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
    torch.backends.cudnn.benchmark = tuned
    if best == 0:
        warnings.warn("out of memory at batch size 1 while probing --batch-size auto", RuntimeWarning, stacklevel=2)
        return 1
    return best
