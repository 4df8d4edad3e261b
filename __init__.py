"""hairdiff: fine-grained hair segmentation from the features of a frozen Stable Diffusion model.

The Python API (README, "Python"):

    from hairdiff import HairSegmenter
    segmenter = HairSegmenter.from_pretrained("hairdiff-demo/run")   # a run, a model folder or a Hub id
    result = segmenter("photo.jpg")                                   # .mask (uint8, 1 = hair), .probability

    from hairdiff.cache import open_store                            # the feature cache, read-only, for any model

Names are imported on first use (module __getattr__), so `import hairdiff` and `pipeline --help` load nothing
heavy (no torch, no zarr).
"""
from __future__ import annotations

import importlib

_LAZY = {
    "HairSegmenter": "hairdiff.evaluate.segmenter",
    "Segmentation": "hairdiff.evaluate.segmenter",
    "open_store": "hairdiff.cache.reader",
    "HairdiffError": "hairdiff.core.errors",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # once: later lookups are plain attribute reads
        return value
    raise AttributeError(f"module 'hairdiff' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
