"""The preprocessing rule that maps original pixels to store pixels, and its inverse.

Rule ``letterbox-tl-v1``: scale by ``R / max(H, W)`` keeping the aspect ratio, paste at the top-left of an
``R x R`` canvas. Top-left (not centred) so the inverse is a plain crop of ``[:nh, :nw]`` with no offsets to
record, and stride-s feature maps stay aligned with pixel 0.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from hairdiff.core.labels import IGNORE

RULE = "letterbox-tl-v1"
IMAGE_PAD = 0  # the image value of padding (black; x / 127.5 - 1 makes it -1); labels pad with IGNORE


def fit_size(h: int, w: int, resolution: int) -> tuple[int, int]:
    """Size of the valid (non-padded) region of an ``h x w`` image letterboxed into ``resolution``."""
    s = resolution / max(h, w)
    return max(1, min(resolution, round(h * s))), max(1, min(resolution, round(w * s)))


def letterbox_image(img: np.ndarray, resolution: int) -> np.ndarray:
    h, w = img.shape[:2]
    nh, nw = fit_size(h, w, resolution)
    out = np.full((resolution, resolution, 3), IMAGE_PAD, dtype=np.uint8)
    if (nh, nw) == (h, w):
        out[:nh, :nw] = img
    else:
        # PIL's bicubic filter widens its support when shrinking, i.e. it antialiases.
        out[:nh, :nw] = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BICUBIC))
    return out


def letterbox_label(label: np.ndarray, resolution: int) -> np.ndarray:
    h, w = label.shape[:2]
    nh, nw = fit_size(h, w, resolution)
    out = np.full((resolution, resolution), IGNORE, dtype=np.uint8)
    if (nh, nw) == (h, w):
        out[:nh, :nw] = label
    else:
        out[:nh, :nw] = np.asarray(Image.fromarray(label).resize((nw, nh), Image.NEAREST))
    return out


def unletterbox(prob: torch.Tensor, orig_hw: tuple[int, int], out_hw: tuple[int, int]) -> torch.Tensor:
    """Map a ``(..., K, r, r)`` map at the store resolution (or any stride of it) back to ``out_hw``.

    ``orig_hw`` is the original image size, which fixes the valid region; ``out_hw`` is where the map is
    wanted (the image, or an annotation of another size covering the same field of view).
    """
    r = prob.shape[-1]
    nh, nw = fit_size(orig_hw[0], orig_hw[1], r)
    lead = prob.shape[:-2]
    x = prob[..., :nh, :nw].reshape(-1, 1, nh, nw) if prob.dim() != 4 else prob[..., :nh, :nw]
    y = F.interpolate(x.float(), size=tuple(out_hw), mode="bilinear", align_corners=False)
    return y.reshape(*lead, *out_hw)


def preprocessing_record(resolution: int) -> dict:
    """Everything about preprocessing that changes the features; part of every fingerprint."""
    return {
        "rule": RULE,
        "resolution": resolution,
        "image_resize": "PIL bicubic (antialiased when shrinking)",
        "label_resize": "nearest",
        "image_pad": IMAGE_PAD,
        "label_pad": IGNORE,
        "normalize": "x / 127.5 - 1",
    }
