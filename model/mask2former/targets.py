"""Semantic label maps -> Mask2Former set targets: one binary mask per class present, plus the valid map.

Two forms of the same targets:
- `dense_targets` (what training uses): every class has a slot, (B, K, H, W) masks with a presence flag
  per slot and a (B, H, W) valid map, built on the labels' device with no host synchronisation (no
  `bool()`, no tensor built from Python data), so a whole batch is matched and scored at once;
- `semantic_targets` (the per-image reference criterion, criterion.SetCriterion): a list of dicts
  holding only the classes present.
Label values are checked on the host, before the labels reach the device (`check_label_values`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hairdiff.core.labels import IGNORE


def _as_label_tensor(labels, who: str) -> torch.Tensor:
    lab = torch.as_tensor(np.asarray(labels)) if not isinstance(labels, torch.Tensor) else labels
    if lab.dim() != 3:
        raise ValueError(f"{who}: labels must be (B, H, W), got shape {tuple(lab.shape)}")
    if lab.dtype.is_floating_point or lab.dtype == torch.bool:
        raise ValueError(f"{who}: labels must be an integer tensor, got {lab.dtype}")
    return lab


def check_label_values(labels, num_classes: int, who: str = "semantic_targets") -> None:
    """ValueError when a label is neither a class id (0..num_classes-1) nor IGNORE. Host-side: pass labels that
    are still in host memory (a device tensor would be copied back, which waits for the device)."""
    lab = _as_label_tensor(labels, who)
    # Cheap when all is well (numpy's byte comparisons: ~3 ms for 16 labels of 512 x 512, several times faster
    # than torch's); the values are collected only when something is off.
    if lab.dtype == torch.uint8:
        a = lab.numpy()
        if not ((a >= num_classes) & (a != IGNORE)).any():
            return
    elif not bool(((lab >= num_classes) & (lab != IGNORE) | (lab < 0)).any()):
        return
    values = [int(v) for v in torch.unique(lab).tolist()]
    bad = [v for v in values if not (0 <= v < num_classes or v == IGNORE)]
    if bad:
        raise ValueError(f"{who}: label values {bad[:10]} are outside 0..{num_classes - 1} and not {IGNORE} "
                         f"(ignore); remap the annotation or set num_classes")


@dataclass
class DenseTargets:
    """A batch's targets with one slot per class: masks (B, K, H, W) float32 (1 where the pixel has class k,
    0 elsewhere and on ignored pixels), present (B, K) bool (class k occurs in the image), valid (B, H, W)
    float32 (1 = not ignored)."""

    masks: torch.Tensor
    present: torch.Tensor
    valid: torch.Tensor


def dense_targets(labels: torch.Tensor, num_classes: int = 2) -> DenseTargets:
    """labels (B, H, W) integer on any device (values checked beforehand by check_label_values) -> DenseTargets.

    Device-side only: comparisons and reductions, nothing that waits for the device.
    """
    lab = _as_label_tensor(labels, "dense_targets")
    classes = torch.arange(num_classes, device=lab.device, dtype=lab.dtype)
    hit = lab[:, None] == classes[None, :, None, None]  # (B, K, H, W)
    return DenseTargets(masks=hit.float(), present=hit.flatten(2).any(-1), valid=(lab != IGNORE).float())


def semantic_targets(labels, num_classes: int = 2) -> list[dict]:
    """labels (B, R, R) integer (torch or numpy): 0..num_classes-1, 255 = ignore (incl. letterbox padding).

    Returns per image dict(labels=(n,) int64 class ids present (sorted), masks=(n, R, R) float32 (0 on
    ignored pixels), valid=(R, R) bool (label != 255)). An image with only ignored pixels gets n = 0.
    The per-image form of the reference criterion; it synchronises with the device per image and class.
    """
    lab = _as_label_tensor(labels, "semantic_targets")
    check_label_values(lab.cpu(), num_classes)
    lab = lab.long()
    valid = lab != IGNORE
    out = []
    for b in range(lab.shape[0]):
        present = [c for c in range(num_classes) if bool((lab[b] == c).any())]
        cls = torch.tensor(present, dtype=torch.int64, device=lab.device)
        masks = (lab[b][None] == cls[:, None, None]).float() if present else \
            torch.zeros((0, *lab.shape[1:]), dtype=torch.float32, device=lab.device)
        out.append({"labels": cls, "masks": masks, "valid": valid[b]})
    return out


def valid_map(target: dict, like: torch.Tensor) -> torch.Tensor:
    """The target's valid map (H, W) as `like`'s dtype/device; all valid when the target carries none."""
    valid = target.get("valid")
    if valid is None:
        return torch.ones(like.shape[-2:], dtype=like.dtype, device=like.device)
    if tuple(valid.shape) != tuple(like.shape[-2:]):
        raise ValueError(f"target valid map {tuple(valid.shape)} does not match its masks {tuple(like.shape[-2:])}")
    return valid.to(like)
