"""How features are stored: float16, or int8 with a per-sample, per-channel affine map (scale, offset).

int8: q = round((x - offset) / scale) clipped to [-127, 127], scale = (max - min) / 254, offset = (max + min) / 2
over each channel of each sample, so the error is at most half a step (1/508 of the channel's range). The
input is the float16-rounded feature, as in every store. `predict` applies the same round trip so a head
sees the values it was trained on.
"""
from __future__ import annotations

import numpy as np

PRECISIONS = ("fp16", "int8")


def stored_dtype(precision: str):
    return np.int8 if precision == "int8" else np.float16


def quantize_int8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x (B, C, H, W) -> q int8 (B, C, H, W), scale and offset float32 (B, C)."""
    x = np.asarray(x, dtype=np.float16).astype(np.float32)
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    mn, mx = flat.min(-1), flat.max(-1)
    scale = np.maximum(mx - mn, 1e-12) / 254.0
    offset = (mx + mn) / 2.0
    q = np.clip(np.rint((x - offset[..., None, None]) / scale[..., None, None]), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32), offset.astype(np.float32)


def dequantize_int8(q: np.ndarray, scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """The float16 features an int8 store gives back."""
    return (q.astype(np.float32) * scale[..., None, None] + offset[..., None, None]).astype(np.float16)


def round_trip(x: np.ndarray, precision: str) -> np.ndarray:
    """Features as a store of `precision` would give them back (float16)."""
    if precision == "int8":
        return dequantize_int8(*quantize_int8(x))
    return np.asarray(x).astype(np.float16)
