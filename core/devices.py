"""Device and dtype names -> torch objects, validated before anything is loaded."""
from __future__ import annotations

import re

from hairdiff.core.errors import UsageError

DTYPE_NAMES = ("auto", "float16", "bfloat16", "float32", "fp16", "bf16", "fp32")
_DTYPES = {"float16": "float16", "fp16": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float32": "float32", "fp32": "float32"}
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device(spec: str, option: str = "--device") -> None:
    """UsageError unless `spec` names a device this machine has (auto | cpu | cuda | cuda:N)."""
    if not _DEVICE.match(str(spec)):
        raise UsageError(f"{option} {spec!r}: use auto, cpu, cuda or cuda:N")
    if not str(spec).startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise UsageError(f"{option} {spec}: no CUDA device is visible on this machine (torch {torch.__version__}); "
                         f"use {option} cpu or {option} auto")
    index = int(spec.split(":")[1]) if ":" in spec else 0
    if index >= torch.cuda.device_count():
        raise UsageError(f"{option} {spec}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                         f"cuda:0..cuda:{torch.cuda.device_count() - 1}; pick one of those or {option} auto")


def resolve_device(spec: str = "auto"):
    """torch.device for a checked name; auto is the first CUDA device when there is one."""
    import torch

    check_device(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def check_dtype(name: str, option: str = "--dtype") -> None:
    if name not in DTYPE_NAMES:
        raise UsageError(f"{option} {name!r}: use one of {', '.join(DTYPE_NAMES[:4])}")


def resolve_dtype(name: str, device):
    """auto: float16 on CUDA (the backbone's usual inference dtype), float32 elsewhere."""
    import torch

    check_dtype(name)
    if name == "auto":
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    return getattr(torch, _DTYPES[name])
