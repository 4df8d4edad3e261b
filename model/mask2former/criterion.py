"""Mask2Former's set criterion, one image list at a time: the reference the batched criterion is checked against.

Training runs batch_criterion.BatchCriterion (every image and every prediction at once, no host
synchronisation). This form (a Python loop over images, scipy's solver on a host copy of every cost
matrix) is kept because it reads like Mask2Former's SetCriterion and HungarianMatcher: the parity tests
compare the batched criterion with it, called once on the whole batch (mask terms over the batch's number
of masks, the class term the mean over the batch: Mask2Former's normalisation), on the same point draws.
`per_sample_loss` (each image through the criterion alone, then the mean over the batch) is the loss
training computed before it took Mask2Former's normalisation; only bench/head_speed.py's "old step" still
runs it, to time the step as it was.

Every decoder prediction is supervised (the final one and each `aux_outputs` entry, matched
independently). Returns each term per layer ("loss_ce", "loss_mask", "loss_dice", then "loss_ce_0", ...
for aux layer 0 = the initial queries) and "loss", the weighted total.

Ignore pixels: each target carries a `valid` (H, W) map; a sampled point whose bilinear footprint touches
an invalid pixel gets weight 0, every other point weight 1, so ignore pixels add nothing to BCE or dice,
not even through a neighbouring point's interpolation (see point_sampling.py); the matcher uses the same
weights, and importance sampling never spends points there.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hairdiff.model.mask2former.matcher import HungarianMatcher
from hairdiff.model.mask2former.point_sampling import PointDraws, point_sample, point_targets, uncertain_points
from hairdiff.model.mask2former.targets import valid_map

LOSS_NAMES = ("loss_ce", "loss_mask", "loss_dice")


def build_criterion(cfg) -> "SetCriterion":
    """SetCriterion and its matcher with the loss weights and point counts of a HeadConfig."""
    matcher = HungarianMatcher(cost_class=cfg.class_weight, cost_mask=cfg.mask_weight, cost_dice=cfg.dice_weight,
                               num_points=cfg.num_points)
    weights = {"loss_ce": cfg.class_weight, "loss_mask": cfg.mask_weight, "loss_dice": cfg.dice_weight}
    return SetCriterion(cfg.num_classes, matcher, weights, eos_coef=cfg.no_object_weight, num_points=cfg.num_points)


class SetCriterion(nn.Module):
    def __init__(self, num_classes: int, matcher: HungarianMatcher, weight_dict: dict[str, float], eos_coef: float,
                 num_points: int, oversample_ratio: float = 3.0, importance_sample_ratio: float = 0.75):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        unknown = set(self.weight_dict) - set(LOSS_NAMES)
        if unknown:
            raise ValueError(f"SetCriterion: unknown loss weights {sorted(unknown)}; known: {LOSS_NAMES}")
        self.eos_coef = eos_coef
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef  # "no object" is the common case: down-weight it
        self.register_buffer("empty_weight", empty_weight)

    def loss_labels(self, logits: torch.Tensor, targets: list[dict], indices) -> torch.Tensor:
        b, q, _ = logits.shape
        target_classes = torch.full((b, q), self.num_classes, dtype=torch.int64, device=logits.device)
        for i, (src, tgt) in enumerate(indices):
            target_classes[i, src.to(logits.device)] = targets[i]["labels"].to(logits.device)[tgt.to(logits.device)]
        return F.cross_entropy(logits.transpose(1, 2), target_classes, weight=self.empty_weight.to(logits))

    def loss_masks(self, pred_masks: torch.Tensor, targets: list[dict], indices, num_masks: float,
                   generator: torch.Generator | None, draws: list[dict] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        device = pred_masks.device
        batch = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)]).to(device)
        src = torch.cat([s for s, _ in indices]).to(device)
        if src.numel() == 0:  # nothing to supervise (every image fully ignored): zero, but keep the graph
            zero = pred_masks.sum() * 0.0
            return zero, zero
        preds = pred_masks[batch, src][:, None]  # (N, 1, h, w)
        tmasks = torch.cat([t["masks"].to(device)[j.to(device)] for t, (_, j) in zip(targets, indices)])[:, None]
        tmasks = tmasks.to(preds.dtype)
        valid = torch.cat([valid_map(t, tmasks)[None].expand(len(j), -1, -1)
                           for t, (_, j) in zip(targets, indices)])[:, None]
        given = {}
        if draws is not None:  # the draws of each matched mask's target slot (its class)
            classes = [t["labels"].to(device)[j.to(device)] for t, (_, j) in zip(targets, indices)]
            given = {k: torch.cat([d[k][c] for d, c in zip(draws, classes)]) for k in ("oversampled", "fill")}
        with torch.no_grad():
            coords = uncertain_points(preds, self.num_points, self.oversample_ratio, self.importance_sample_ratio,
                                      valid=valid, generator=generator, **given)
            labels, w = point_targets(tmasks, valid, coords)
        logits = point_sample(preds, coords).squeeze(1)  # (N, P)
        norm = w.sum(1).clamp_min(1e-6)
        bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        loss_mask = ((bce * w).sum(1) / norm).sum() / num_masks
        probs = logits.sigmoid() * w
        dice = 1 - (2 * (probs * labels).sum(1) + 1) / (probs.sum(1) + (labels * w).sum(1) + 1)
        return loss_mask, dice.sum() / num_masks

    def layer_losses(self, out: dict, targets: list[dict], num_masks: float, generator: torch.Generator | None,
                     draws: list[dict] | None = None) -> dict[str, torch.Tensor]:
        logits, masks = out["pred_logits"].float(), out["pred_masks"].float()
        coords = None if draws is None else [d["matcher"] for d in draws]
        indices = self.matcher({"pred_logits": logits, "pred_masks": masks}, targets, generator=generator,
                               coords=coords)
        loss_mask, loss_dice = self.loss_masks(masks, targets, indices, num_masks, generator, draws)
        return {"loss_ce": self.loss_labels(logits, targets, indices), "loss_mask": loss_mask, "loss_dice": loss_dice}

    def forward(self, outputs: dict, targets: list[dict], generator: torch.Generator | None = None,
                draws: PointDraws | None = None) -> dict:
        """draws: the batch's point draws (point_sampling.draw_points), prediction l of the head's order (the
        initial queries' l = 0, the final layer's the last); without them points are drawn from `generator`."""
        if len(targets) != outputs["pred_logits"].shape[0]:
            raise ValueError(f"SetCriterion: {len(targets)} targets for a batch of {outputs['pred_logits'].shape[0]}")
        # Average number of target masks (at least 1) normalises the mask terms, as in Mask2Former.
        num_masks = max(float(sum(len(t["labels"]) for t in targets)), 1.0)
        aux = outputs.get("aux_outputs", [])
        per_layer = (lambda layer: None) if draws is None else \
            (lambda layer: [draws.layer(layer, b) for b in range(len(targets))])
        losses = self.layer_losses(outputs, targets, num_masks, generator, per_layer(len(aux)))
        for i, a in enumerate(aux):
            losses.update({f"{k}_{i}": v for k, v in
                           self.layer_losses(a, targets, num_masks, generator, per_layer(i)).items()})
        total = None
        for name, value in losses.items():
            base = name if name in LOSS_NAMES else name.rsplit("_", 1)[0]
            term = value * self.weight_dict.get(base, 0.0)
            total = term if total is None else total + term
        losses["loss"] = total
        return losses


# ------------------------------------------------------------------------- the per-sample training loss
TOTAL_KEY = "loss"  # where SetCriterion puts the weighted sum


def _slice(outputs: dict, i: int) -> dict:
    out = {"pred_logits": outputs["pred_logits"][i:i + 1].float(), "pred_masks": outputs["pred_masks"][i:i + 1].float()}
    if "aux_outputs" in outputs:
        out["aux_outputs"] = [{k: v[i:i + 1].float() for k, v in a.items()} for a in outputs["aux_outputs"]]
    return out


def per_sample_loss(criterion: SetCriterion, outputs: dict, targets: list[dict], *, draws: PointDraws | None = None,
                    seeds: list[int] | None = None, device=None) -> tuple[torch.Tensor, dict]:
    """Mean over the batch of per-sample criterion losses (the loss training computed before the batched step).

    Points: `draws`, the batch's PointDraws (as the batched criterion gets them), or per-sample generators
    seeded with `seeds` on `device` (how training drew them then)."""
    if (draws is None) == (seeds is None):
        raise ValueError("per_sample_loss: pass either draws or seeds")
    total, terms = None, {}
    for i, t in enumerate(targets):
        if draws is not None:
            losses = criterion(_slice(outputs, i), [t], draws=draws.samples(i, i + 1))
        else:
            losses = criterion(_slice(outputs, i), [t], generator=torch.Generator(device=device).manual_seed(seeds[i]))
        total = losses[TOTAL_KEY] if total is None else total + losses[TOTAL_KEY]
        for k, v in losses.items():
            if k != TOTAL_KEY:
                terms[k] = terms.get(k, 0.0) + v.detach().float()
    n = len(targets)
    return total / n, {k: v / n for k, v in terms.items()}


def sample_seed(seed: int, iteration: int, global_index: int) -> int:
    """Seed of one sample's point draws in the per-sample loss (independent of batch split and resumption)."""
    return int(np.random.SeedSequence([seed, iteration, global_index]).generate_state(1, np.uint64)[0] >> 1)


def batch_loss(criterion: SetCriterion, outputs: dict, targets: list[dict], seeds: list[int],
               device) -> tuple[torch.Tensor, dict]:
    """per_sample_loss with per-sample seeds: the training loss of the step before the batched one."""
    return per_sample_loss(criterion, outputs, targets, seeds=seeds, device=device)
