"""Counting, on any device, the calls that make the host wait for the device (tests and bench/head_speed.py).

On a GPU `torch.cuda.set_sync_debug_mode("error")` finds synchronisations; on the CPU nothing waits, so
`HostSyncCounter` counts the Python-level calls that would: reading a tensor's value on the host (`item`,
`tolist`, `numpy`, `cpu`, `bool()`/`float()`/`int()`/index use of a tensor), building a tensor from Python
data (`torch.tensor`/`as_tensor` of a list or number: a copy from pageable host memory once on a GPU), and
operations whose output size depends on the values (`nonzero`, boolean-mask indexing, `unique`, ...).
It sees every call made through torch's Python API (a TorchFunctionMode), wherever it comes from.
"""
from __future__ import annotations

import traceback
from collections import Counter

import torch
from torch.overrides import TorchFunctionMode

READS = {"item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__", "__format__", "__repr__"}
FROM_PYTHON = {"tensor", "as_tensor"}
VALUE_SIZED = {"nonzero", "argwhere", "unique", "unique_consecutive", "masked_select", "bincount", "histc"}


def _bool_index(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


def _python_data(data) -> bool:
    return not isinstance(data, torch.Tensor) and not hasattr(data, "__array_interface__")


class HostSyncCounter(TorchFunctionMode):
    """with HostSyncCounter() as c: ...; c.total, c.counts (by call), c.where (the first frame of our code)."""

    def __init__(self, keep_stacks: bool = False):
        super().__init__()
        self.counts: Counter[str] = Counter()
        self.where: Counter[str] = Counter()
        self.keep_stacks = keep_stacks

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def _hit(self, name: str) -> None:
        self.counts[name] += 1
        if self.keep_stacks:
            ours = [f for f in traceback.extract_stack()[:-2] if "/torch/" not in f.filename]
            frame = ours[-1] if ours else None
            self.where[f"{name} at {frame.filename}:{frame.lineno}" if frame else name] += 1

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in READS or name in VALUE_SIZED:
            self._hit(name)
        elif name in FROM_PYTHON and args and _python_data(args[0]):
            self._hit(f"torch.{name}")
        elif name in ("__getitem__", "__setitem__") and len(args) > 1 and _bool_index(args[1]):
            self._hit(f"{name}[bool mask]")
        elif name == "repeat_interleave" and len(args) > 1 and isinstance(args[1], torch.Tensor):
            self._hit("repeat_interleave(tensor)")
        return func(*args, **kwargs)

    def report(self) -> str:
        return ", ".join(f"{k} x{v}" for k, v in (self.where or self.counts).most_common())
