"""Semantic label maps -> Mask2Former set targets (one binary mask per class present) + valid maps."""
from __future__ import annotations

import numpy as np
import torch

from hairdiff.core.labels import IGNORE


def semantic_targets(labels, num_classes: int = 2) -> list[dict]:
    """labels (B, R, R) integer (torch or numpy): 0..num_classes-1, 255 = ignore (incl. letterbox padding).

    Returns per image dict(labels=(n,) int64 class ids present (sorted), masks=(n, R, R) float32 (0 on
    ignored pixels), valid=(R, R) bool (label != 255)). An image with only ignored pixels gets n = 0.
    """
    lab = torch.as_tensor(np.asarray(labels)) if not isinstance(labels, torch.Tensor) else labels
    if lab.dim() != 3:
        raise ValueError(f"semantic_targets: labels must be (B, H, W), got shape {tuple(lab.shape)}")
    if lab.dtype.is_floating_point or lab.dtype == torch.bool:
        raise ValueError(f"semantic_targets: labels must be an integer tensor, got {lab.dtype}")
    lab = lab.long()
    valid = lab != IGNORE
    bad = valid & ((lab < 0) | (lab >= num_classes))
    if bool(bad.any()):
        values = sorted({int(v) for v in torch.unique(lab[bad]).tolist()})
        raise ValueError(f"semantic_targets: label values {values[:10]} are outside 0..{num_classes - 1} and not "
                         f"{IGNORE} (ignore); remap the annotation or set num_classes")
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
