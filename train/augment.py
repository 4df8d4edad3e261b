"""Augmentation that a feature cache can do exactly: random crops of the cached maps (`--crop SIZE`).

A crop of SIZE x SIZE store pixels whose corner lies on the grid of the coarsest stored stride cuts every
level at whole feature cells (rows y0/s .. (y0+SIZE)/s of a stride-s level), so the cropped features are
the cached values themselves and the label is cut at the same pixels: nothing is resampled. It is "nearly"
a crop of the image because the features at the crop's border saw context beyond it (the backbone ran on
the whole image); that is the one difference from Mask2Former's crop of the image before the backbone.

What is not done, and why: flips and rescaling would need the backbone to see the flipped or rescaled
image (SD features are not flip-equivariant and do not rescale like pixels); photometric jitter acts on
pixels the cache never holds. Those need augmented views extracted into the cache.

Placement follows Mask2Former's random crop of the (unpadded) resized image: the corner is drawn
uniformly on the stride grid among the crops that stay inside the image's valid region (labels != 255,
i.e. the letterbox's top-left image area), or at 0 along a side shorter than SIZE. The draw is a pure
function of (seed, iteration, global sample index), like point sampling, so resume and DDP are exact.
"""
from __future__ import annotations

import numpy as np
import torch

from hairdiff.core.errors import UsageError
from hairdiff.core.labels import IGNORE

_CROP_STREAM = 0x63726F70  # separates crop draws from the point-sampling seeds of the same sample


def check_crop(size: int, levels, resolution: int) -> int:
    """The grid step (coarsest stored stride) a crop of `size` is placed on; UsageError when it cannot be."""
    step = max(int(lv.stride) for lv in levels)
    if size % step or not step <= size <= resolution:
        raise UsageError(f"--crop {size}: use a multiple of {step} (the coarsest stored stride) from {step} to "
                         f"{resolution} (the store resolution)")
    return step


def _extent(valid_rows: np.ndarray) -> int:
    """How many leading rows (or columns) hold a valid pixel."""
    hit = np.flatnonzero(valid_rows)
    return int(hit[-1]) + 1 if hit.size else 0


def crop_corner(label: np.ndarray, size: int, step: int, seed: int, iteration: int, index: int) -> tuple[int, int]:
    """(y0, x0), multiples of `step`, of one sample's crop; see the module docstring for the rule."""
    rng = np.random.default_rng([seed, iteration, index, _CROP_STREAM])
    valid = label != IGNORE
    corner = []
    for extent, side in ((_extent(valid.any(1)), label.shape[0]), (_extent(valid.any(0)), label.shape[1])):
        last = min(side - size, max(0, extent - size)) // step  # the last grid corner inside the image
        corner.append(int(rng.integers(0, last + 1)) * step)
    return corner[0], corner[1]


def crop_batch(batch: dict, levels, size: int, step: int, seed: int, iteration: int) -> dict:
    """The batch's features and labels cut to SIZE x SIZE crops (new tensors; `batch` is left as it was)."""
    strides = {lv.name: int(lv.stride) for lv in levels}
    labels = batch["labels"].numpy()
    first = batch["global_start"]
    corners = [crop_corner(labels[j], size, step, seed, iteration, first + j) for j in range(len(labels))]
    feats = {name: torch.stack([x[j, :, y0 // strides[name]:(y0 + size) // strides[name],
                                  x0 // strides[name]:(x0 + size) // strides[name]]
                                for j, (y0, x0) in enumerate(corners)])
             for name, x in batch["features"].items()}
    cut = torch.stack([batch["labels"][j, y0:y0 + size, x0:x0 + size] for j, (y0, x0) in enumerate(corners)])
    return {**batch, "features": feats, "labels": cut, "crops": corners}
