"""Matching predicted queries to target masks (Mask2Former's point-sampled costs).

cost = cost_class * (-P(target class)) + cost_mask * mean BCE + cost_dice * dice, with BCE and dice on
`num_points` uniformly random points shared by all predictions and targets of an image. Pixels outside a
target's `valid` map (ignore label, letterbox padding) carry no cost.

Two implementations of the same matching:
- `batch_costs` + `assign` (training): every image of a batch at once, the costs as batched matrix products
  over dense targets (targets.DenseTargets). The assignment stays on the device: a semantic image has at
  most one target per class, and with at most two targets the optimum has a closed form (below); more
  classes, or fewer queries than classes, take one host copy of the stacked costs and scipy's solver.
- `HungarianMatcher` (the per-image reference, criterion.SetCriterion): one image at a time, scipy's
  linear_sum_assignment on a host copy of each cost matrix.

The closed form for two targets: the best pair i != j minimising c[i, 0] + c[j, 1]. If the best query of
column 0 and of column 1 differ, they are the pair. If one query m is best for both, an optimal pair
contains m (swap m in for whichever query of a pair without it: neither cost grows), so it is (m, second
best of column 1) or (second best of column 0, m), whichever costs less. Ties go to the lower query index
(argmin's first minimum), and between the two pairs to (m, second of column 1); scipy's solver breaks exact
ties its own way, so on tied costs both give an optimal assignment, not always the same one.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from hairdiff.model.mask2former.point_sampling import bilinear_corners, point_sample, point_targets, point_weights
from hairdiff.model.mask2former.targets import DenseTargets, valid_map

MAX_CLOSED_FORM = 2  # targets per image the device-side assignment solves exactly


def pairwise_costs(logits: torch.Tensor, labels: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (..., Q, P), labels (..., T, P) (0 where w is 0), point weights w (..., P) in {0, 1} -> weighted
    mean BCE (..., Q, T), dice loss (..., Q, T). Leading dimensions are batch dimensions.

    BCE of x against label y is softplus(x) - x * y, so the pairwise mean is (softplus(x) . w - x . y) / sum(w):
    two transcendental passes over the (queries x points) logits (softplus, sigmoid) and matrix products,
    instead of BCE against all-ones and all-zeros maps.
    """
    t = labels.shape[-2]
    norm = w.sum(-1).clamp_min(1e-6)[..., None, None]
    yw = torch.cat([labels, w[..., None, :]], -2)  # (..., T+1, P): the labels, then the weights
    sums = lambda v: (yw @ v.transpose(-1, -2)).transpose(-1, -2)  # noqa: E731  (..., Q, T+1): sums over points
    x_y = sums(logits)[..., :t]
    neg_w = sums(F.softplus(logits))[..., t:]
    s = sums(logits.sigmoid())  # sigmoid . y, then sigmoid . w
    bce = (neg_w - x_y) / norm
    dice = 1 - (2 * s[..., :t] + 1) / (s[..., t:] + labels.sum(-1)[..., None, :] + 1)
    return bce, dice


def pairwise_costs_reference(logits: torch.Tensor, labels: torch.Tensor,
                             w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """pairwise_costs as the per-image reference computes them (Mask2Former's form: BCE against all-ones and
    all-zeros maps): logits (Q, P), labels (T, P), w (P,) -> BCE (Q, T), dice (Q, T)."""
    norm = w.sum().clamp_min(1e-6)
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none") * w
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none") * w
    bce = (pos @ labels.T + neg @ (1 - labels).T) / norm
    probs = logits.sigmoid() * w
    dice = 1 - (2 * probs @ labels.T + 1) / (probs.sum(-1)[:, None] + (labels * w).sum(-1)[None, :] + 1)
    return bce, dice


def finite_costs(cost: torch.Tensor) -> torch.Tensor:
    # A non-finite cost would crash the solver (and poison a closed-form sum): make such pairs the last resort.
    big = torch.finfo(cost.dtype).max
    return torch.nan_to_num(cost, nan=big, posinf=big, neginf=big)


# ------------------------------------------------------------------------------------------- batched
@torch.no_grad()
def batch_costs(pred_logits: torch.Tensor, pred_masks: torch.Tensor, targets: DenseTargets, coords: torch.Tensor,
                cost_class: float, cost_mask: float, cost_dice: float) -> torch.Tensor:
    """Matching costs of one prediction for a batch: pred_logits (B, Q, K+1), pred_masks (B, Q, h, w), coords
    (B, P, 2) -> (B, Q, K) float32, the cost of query q for the target of class k (meaningful where present).

    On a GPU the whole batch is one set of batched products, the queries sampled as channels of one
    grid_sample. On the CPU, _image_costs_cpu: one image and a cache-sized block of points at a time.
    """
    num_classes = targets.masks.shape[1]
    w = point_weights(targets.valid[:, None], coords)  # (B, P)
    labels = point_sample(targets.masks, coords) * w[:, None]  # (B, K, P)
    if pred_masks.device.type == "cpu":
        corners, weights = bilinear_corners(coords, *pred_masks.shape[-2:])
        # (B, h*w, Q): free when the masks are pixel-major, as the head makes them (transformer_decoder.query_masks)
        table = pred_masks.detach().float().permute(0, 2, 3, 1).flatten(1, 2).contiguous()
        costs = [_image_costs_cpu(table[i], corners[i], weights[i], labels[i], w[i]) for i in range(len(table))]
        bce, dice = (torch.stack(c) for c in zip(*costs))
    else:
        bce, dice = pairwise_costs(point_sample(pred_masks.float(), coords), labels, w)  # queries as channels
    cls = -pred_logits.float().softmax(-1)[..., :num_classes]
    return finite_costs(cost_mask * bce + cost_class * cls + cost_dice * dice)


CPU_POINT_BLOCK = 1024  # points per block: (block x queries) float32 temporaries stay in the core's cache


def _image_costs_cpu(table: torch.Tensor, corners: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor,
                     w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """pairwise_costs of one image on the CPU, the same sums accumulated block by block of points.

    table (h*w, Q) mask logits, pixel-major; corners / weights (P, 4): bilinear_corners of the points; labels
    (T, P) (0 where w is 0), w (P,). A point's samples are an embedding bag over the table (its four corner
    rows, weighted: grid_sample's values up to rounding, at a third of its time here, since one point's
    weights serve all queries); each block's logits, softplus and sigmoid are reduced into (T+1, Q) sums while
    they are in cache, instead of three passes over (P, Q) arrays in memory.
    """
    t, q = labels.shape[0], table.shape[1]
    yw = torch.cat([labels, w[None]])  # (T+1, P)
    x_y, neg_w, s = table.new_zeros(t, q), table.new_zeros(1, q), table.new_zeros(t + 1, q)
    for i in range(0, yw.shape[1], CPU_POINT_BLOCK):
        j = slice(i, i + CPU_POINT_BLOCK)
        x = F.embedding_bag(corners[j], table, per_sample_weights=weights[j], mode="sum")  # (block, Q)
        x_y.addmm_(yw[:t, j], x)
        neg_w.addmm_(yw[t:, j], F.softplus(x))
        s.addmm_(yw[:, j], x.sigmoid())
    bce = (neg_w - x_y).T / w.sum().clamp_min(1e-6)
    dice = 1 - (2 * s[:t] + 1).T / (s[t:].T + labels.sum(-1)[None, :] + 1)
    return bce, dice


def _closed_form(cost: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """cost (N, Q, K <= 2), present (N, K) -> query of each slot (N, K); see the module docstring."""
    c = cost.double()  # sums of two near-max costs stay finite and comparable
    best = c.argmin(1)  # (N, K), first minimum
    if c.shape[2] == 1:
        return best
    best_val = c.gather(1, best[:, None]).squeeze(1)
    without = c.scatter(1, best[:, None], float("inf"))
    second = without.argmin(1)
    second_val = without.gather(1, second[:, None]).squeeze(1)
    # Both present and one query best for both: (m, second of 1) unless (second of 0, m) costs strictly less.
    keep_first = best_val[:, 0] + second_val[:, 1] <= second_val[:, 0] + best_val[:, 1]
    clash = (best[:, 0] == best[:, 1]) & present.all(1)
    q0 = torch.where(clash & ~keep_first, second[:, 0], best[:, 0])
    q1 = torch.where(clash & keep_first, second[:, 1], best[:, 1])
    return torch.stack((q0, q1), 1)


def _host_assignment(cost: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """scipy on one host copy of all the costs (one synchronisation for the whole batch)."""
    c, p = cost.cpu().numpy(), present.cpu().numpy()
    query = np.zeros(p.shape, np.int64)
    matched = np.zeros(p.shape, bool)
    for n in range(c.shape[0]):
        cols = np.flatnonzero(p[n])
        if cols.size:
            rows, j = linear_sum_assignment(c[n][:, cols])
            query[n, cols[j]] = rows
            matched[n, cols[j]] = True
    out = torch.from_numpy(np.stack([query, matched.astype(np.int64)]))
    if cost.device.type == "cuda":
        out = out.pin_memory()
    out = out.to(cost.device, non_blocking=True)
    return out[0], out[1].bool()


@torch.no_grad()
def assign(cost: torch.Tensor, present: torch.Tensor, host: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimal assignment of queries to present targets.

    cost (..., Q, K), present (..., K) bool -> query (..., K) int64 (the query matched to slot k) and matched
    (..., K) bool (slot k has a query: present, as long as there are at least as many queries as targets).
    host: None = on the device when the closed form applies (K <= 2 and Q >= K), else scipy on the host;
    True / False forces one or the other (the closed form only where it applies).
    """
    lead, (q, k) = cost.shape[:-2], cost.shape[-2:]
    flat_cost, flat_present = cost.reshape(-1, q, k), present.reshape(-1, k)
    closed = k <= MAX_CLOSED_FORM and q >= k
    if host is None:
        host = not closed
    if not host and not closed:
        raise ValueError(f"assign: the device-side closed form needs at most {MAX_CLOSED_FORM} targets and at least "
                         f"as many queries (got {k} targets, {q} queries)")
    if host:
        query, matched = _host_assignment(flat_cost, flat_present)
    else:
        query, matched = _closed_form(flat_cost, flat_present), flat_present
    return query.reshape(*lead, k), matched.reshape(*lead, k)


# ------------------------------------------------------------------------------------------ reference
class HungarianMatcher(nn.Module):
    """The per-image matcher (scipy on a host copy of each cost matrix): the reference `assign` is tested
    against, and what criterion.SetCriterion uses."""

    def __init__(self, cost_class: float, cost_mask: float, cost_dice: float, num_points: int):
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("HungarianMatcher: all costs are 0; nothing to match on")
        self.cost_class, self.cost_mask, self.cost_dice = cost_class, cost_mask, cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict], generator: torch.Generator | None = None,
                coords: list[torch.Tensor] | None = None):
        """outputs: pred_logits (B, Q, K+1), pred_masks (B, Q, h, w); targets: dicts with labels (n,),
        masks (n, H, W), valid (H, W). coords: each image's points (P, 2), when the caller drew them (else drawn
        here from `generator`). Returns per image (query indices, target indices), int64, sorted by query."""
        logits_all, masks_all = outputs["pred_logits"].float(), outputs["pred_masks"].float()
        indices = []
        for b, tgt in enumerate(targets):
            pred = masks_all[b][:, None]  # (Q, 1, h, w)
            # One shared draw per image, taken even when it has no target (keeps random streams aligned).
            pts = coords[b][None] if coords is not None else \
                torch.rand(1, self.num_points, 2, device=pred.device, generator=generator)
            n = len(tgt["labels"])
            if n == 0:
                empty = torch.empty(0, dtype=torch.int64)
                indices.append((empty, empty.clone()))
                continue
            tmask = tgt["masks"].to(pred)[:, None]
            valid = valid_map(tgt, tmask)[None, None]
            labels, w = point_targets(tmask, valid.expand(n, -1, -1, -1), pts.expand(n, -1, -1))
            plogits = point_sample(pred, pts.expand(pred.shape[0], -1, -1)).squeeze(1)
            bce, dice = pairwise_costs_reference(plogits, labels, w[0])
            cost_class = -logits_all[b].softmax(-1)[:, tgt["labels"]]
            cost = finite_costs(self.cost_mask * bce + self.cost_class * cost_class + self.cost_dice * dice)
            i, j = linear_sum_assignment(cost.cpu().numpy())
            indices.append((torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64)))
        return indices
