"""Point sampling for mask losses (PointRend-style): losses on K points instead of every pixel.

Coordinates are (x, y) in [0, 1] of the map (align_corners=False), so predictions at stride 4 and targets
at full resolution are sampled at the same places. Ignore handling: a point counts (weight 1) only when
every pixel of its bilinear footprint is valid; a point whose footprint touches an ignore pixel has
weight 0, so an ignore pixel's (arbitrary) target value never reaches a label, not even in part.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def point_sample(maps: torch.Tensor, coords: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """maps (N, C, H, W), coords (N, P, 2) in [0, 1] -> (N, C, P), bilinear."""
    out = F.grid_sample(maps, (2.0 * coords.unsqueeze(2)).sub_(1.0), mode="bilinear", padding_mode=padding_mode,
                        align_corners=False)
    return out.squeeze(3)


def bilinear_corners(coords: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """coords (N, P, 2) in [0, 1] -> the flat pixel indices (N, P, 4) and bilinear weights (N, P, 4) of each
    point's four corners on a height x width map, as grid_sample (align_corners=False, zeros padding) weighs
    them: a corner outside the map has weight 0 (its index is clamped inside, to stay a valid row)."""
    grid = 2.0 * coords - 1.0  # what point_sample hands grid_sample, unnormalised the way it does
    x = ((grid[..., 0] + 1) * width - 1) / 2
    y = ((grid[..., 1] + 1) * height - 1) / 2
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    idx, wts = [], []
    for dy, dx, weight in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        xx, yy = x0 + dx, y0 + dy
        inside = (xx >= 0) & (xx <= width - 1) & (yy >= 0) & (yy <= height - 1)
        idx.append(yy.clamp(0, height - 1) * width + xx.clamp(0, width - 1))
        wts.append(weight * inside)
    return torch.stack(idx, -1).long(), torch.stack(wts, -1)


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
                     generator: torch.Generator | None = None, oversampled: torch.Tensor | None = None,
                     fill: torch.Tensor | None = None) -> torch.Tensor:
    """Importance sampling (Kirillov et al.): oversample uniformly, keep the most uncertain points
    (logits closest to 0), fill the rest uniformly. logits (N, 1, H, W) -> coords (N, num_points, 2).

    valid (N, 1, H, W): points on invalid pixels are never picked as "uncertain" (they carry no loss).
    oversampled (N, int(num_points * oversample_ratio), 2) and fill (N, num_points - kept, 2): the uniform
    draws, when the caller made them (PointDraws); otherwise they are drawn here from `generator`.
    """
    n = logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    coords = oversampled if oversampled is not None else \
        torch.rand(n, num_sampled, 2, device=logits.device, generator=generator)
    uncertainty = -point_sample(logits.float(), coords).squeeze(1).abs()
    if valid is not None:
        uncertainty = torch.where(point_weights(valid, coords) > 0, uncertainty,
                                  torch.full_like(uncertainty, float("-inf")))
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    idx = torch.topk(uncertainty, k=num_uncertain, dim=1).indices
    coords_u = torch.gather(coords, 1, idx[..., None].expand(-1, -1, 2))
    if num_random > 0:
        extra = fill if fill is not None else torch.rand(n, num_random, 2, device=logits.device, generator=generator)
        coords_u = torch.cat([coords_u, extra], 1)
    return coords_u


# ------------------------------------------------------------------------------------ one draw per step
def step_seed(seed: int, iteration: int) -> int:
    """Seed of an iteration's point draws (the whole global batch): independent of resumption and of DDP."""
    return int(np.random.SeedSequence([seed, iteration, 0x706F696E]).generate_state(1, np.uint64)[0] >> 1)


@dataclass
class PointDraws:
    """The uniform draws of every supervised prediction l, sample b and target slot k of a batch.

    matcher (L, B, P, 2): the matcher's points, shared by an image's queries and targets; oversampled
    (L, B, K, int(P * oversample_ratio), 2) and fill (L, B, K, P - int(P * importance_ratio), 2): importance
    sampling's candidates and uniform fill for the mask matched to slot k (class k). Coordinates in [0, 1].
    Prediction order: the initial queries' first, the final layer's last (l = L - 1).
    """

    matcher: torch.Tensor
    oversampled: torch.Tensor
    fill: torch.Tensor

    def samples(self, start: int, stop: int) -> "PointDraws":
        """The draws of samples start..stop-1 (this process's part of the global batch)."""
        return PointDraws(self.matcher[:, start:stop], self.oversampled[:, start:stop], self.fill[:, start:stop])

    def layer(self, layer: int, sample: int) -> dict[str, torch.Tensor]:
        """One prediction's draws for one sample: matcher (P, 2), oversampled (K, S, 2), fill (K, F, 2)."""
        return {"matcher": self.matcher[layer, sample], "oversampled": self.oversampled[layer, sample],
                "fill": self.fill[layer, sample]}


def draw_points(generator: torch.Generator | None, layers: int, batch: int, slots: int, num_points: int,
                oversample_ratio: float = 3.0, importance_sample_ratio: float = 0.75,
                device=None) -> PointDraws:
    """The draws of the whole global batch (three torch.rand calls). A process takes its part with
    PointDraws.samples, so the numbers a sample gets do not depend on how the batch is split over processes."""
    sampled = int(num_points * oversample_ratio)
    fill = num_points - int(importance_sample_ratio * num_points)
    rand = lambda *size: torch.rand(layers, batch, *size, 2, device=device, generator=generator)  # noqa: E731
    return PointDraws(matcher=rand(num_points), oversampled=rand(slots, sampled), fill=rand(slots, fill))
