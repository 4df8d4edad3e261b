"""Point sampling for mask losses (PointRend-style): losses on K points instead of every pixel.

Coordinates are (x, y) in [0, 1] of the map (align_corners=False), so predictions at stride 4 and targets
at full resolution are sampled at the same places. Ignore handling: a point counts (weight 1) only when
every pixel of its bilinear footprint is valid; a point whose footprint touches an ignore pixel has
weight 0, so an ignore pixel's (arbitrary) target value never reaches a label, not even in part.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def point_sample(maps: torch.Tensor, coords: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """maps (N, C, H, W), coords (N, P, 2) in [0, 1] -> (N, C, P), bilinear."""
    out = F.grid_sample(maps, 2.0 * coords.unsqueeze(2) - 1.0, mode="bilinear", padding_mode=padding_mode,
                        align_corners=False)
    return out.squeeze(3)


def point_weights(valid: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """valid (N, 1, H, W) float 0/1 -> (N, P) weights: 1 where the bilinear footprint is all valid, else 0.

    Sampling the *invalid* map gives a value > 0 exactly when a footprint pixel with a positive bilinear
    weight is invalid (a sum of non-negative products), which a threshold on the valid map cannot tell
    from rounding. Border padding: a footprint running off the map reads the edge pixel, as the sample does.
    """
    invalid = point_sample(1.0 - valid, coords, padding_mode="border").squeeze(1)
    return (invalid <= 0).to(valid.dtype)


def point_targets(masks: torch.Tensor, valid: torch.Tensor, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """masks, valid (N, 1, H, W) -> labels (N, P) in [0, 1], weights (N, P) in {0, 1}.

    A point with weight 1 reads valid pixels only; points with weight 0 get label 0 (they do not count).
    """
    w = point_weights(valid, coords)
    return point_sample(masks, coords).squeeze(1) * w, w


def uncertain_points(logits: torch.Tensor, num_points: int, oversample_ratio: float = 3.0,
                     importance_sample_ratio: float = 0.75, valid: torch.Tensor | None = None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Importance sampling (Kirillov et al.): oversample uniformly, keep the most uncertain points
    (logits closest to 0), fill the rest uniformly. logits (N, 1, H, W) -> coords (N, num_points, 2).

    valid (N, 1, H, W): points on invalid pixels are never picked as "uncertain" (they carry no loss).
    """
    n = logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    coords = torch.rand(n, num_sampled, 2, device=logits.device, generator=generator)
    uncertainty = -point_sample(logits.float(), coords).squeeze(1).abs()
    if valid is not None:
        uncertainty = torch.where(point_weights(valid, coords) > 0, uncertainty,
                                  torch.full_like(uncertainty, float("-inf")))
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    idx = torch.topk(uncertainty, k=num_uncertain, dim=1).indices
    coords_u = torch.gather(coords, 1, idx[..., None].expand(-1, -1, 2))
    if num_random > 0:
        coords_u = torch.cat([coords_u, torch.rand(n, num_random, 2, device=logits.device, generator=generator)], 1)
    return coords_u
