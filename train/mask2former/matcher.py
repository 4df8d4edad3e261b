"""Hungarian matching of predicted queries to target masks (Mask2Former's point-sampled costs).

cost = cost_class * (-P(target class)) + cost_mask * mean BCE + cost_dice * dice, with BCE and dice on
`num_points` uniformly random points shared by all predictions and targets of an image. Pixels outside a
target's `valid` map (ignore label, letterbox padding) carry no cost.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from hairdiff.train.mask2former.point_sampling import point_sample, point_targets
from hairdiff.train.mask2former.targets import valid_map


def pairwise_costs(logits: torch.Tensor, labels: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (Q, P), labels (T, P), point weights w (P,) -> weighted mean BCE (Q, T), dice loss (Q, T)."""
    norm = w.sum().clamp_min(1e-6)
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none") * w
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none") * w
    bce = (pos @ labels.T + neg @ (1 - labels).T) / norm
    probs = logits.sigmoid() * w
    dice = 1 - (2 * probs @ labels.T + 1) / (probs.sum(-1)[:, None] + (labels * w).sum(-1)[None, :] + 1)
    return bce, dice


class HungarianMatcher(nn.Module):
    def __init__(self, cost_class: float, cost_mask: float, cost_dice: float, num_points: int):
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("HungarianMatcher: all costs are 0; nothing to match on")
        self.cost_class, self.cost_mask, self.cost_dice = cost_class, cost_mask, cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict], generator: torch.Generator | None = None):
        """outputs: pred_logits (B, Q, K+1), pred_masks (B, Q, h, w); targets: dicts with labels (n,),
        masks (n, H, W), valid (H, W). Returns per image (query indices, target indices), int64, sorted by query."""
        logits_all, masks_all = outputs["pred_logits"].float(), outputs["pred_masks"].float()
        indices = []
        for b, tgt in enumerate(targets):
            pred = masks_all[b][:, None]  # (Q, 1, h, w)
            # One shared draw per image, taken even when it has no target (keeps random streams aligned).
            coords = torch.rand(1, self.num_points, 2, device=pred.device, generator=generator)
            n = len(tgt["labels"])
            if n == 0:
                empty = torch.empty(0, dtype=torch.int64)
                indices.append((empty, empty.clone()))
                continue
            tmask = tgt["masks"].to(pred)[:, None]
            valid = valid_map(tgt, tmask)[None, None]
            labels, w = point_targets(tmask, valid.expand(n, -1, -1, -1), coords.expand(n, -1, -1))
            plogits = point_sample(pred, coords.expand(pred.shape[0], -1, -1)).squeeze(1)
            bce, dice = pairwise_costs(plogits, labels, w[0])
            cost_class = -logits_all[b].softmax(-1)[:, tgt["labels"]]
            cost = self.cost_mask * bce + self.cost_class * cost_class + self.cost_dice * dice
            # A non-finite cost would crash the solver; make such pairs the last resort instead.
            big = torch.finfo(cost.dtype).max
            cost = torch.nan_to_num(cost, nan=big, posinf=big, neginf=big)
            i, j = linear_sum_assignment(cost.cpu().numpy())
            indices.append((torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64)))
        return indices

