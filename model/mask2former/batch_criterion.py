"""The training loss: Mask2Former's set criterion for a whole batch and every supervised prediction at once.

The same loss as the reference (criterion.SetCriterion on the whole batch, with the same points), computed
without a Python loop over images and without waiting for the device:
- targets are dense (targets.DenseTargets: a slot per class with a presence flag, a valid map);
- matching: each prediction's costs for the whole batch as batched matrix products (matcher.batch_costs),
  then the exact assignment on the device (matcher.assign: closed form for up to two targets per image);
- class loss: one cross-entropy over (prediction, image, query) with the no-object weight;
- mask losses: the matched masks gathered into one (predictions x images x slots) stack, importance
  sampling on it, and one grid_sample for the logits at the chosen points; a slot without a target
  (class absent) is computed alongside and weighted out.

Normalisation is Mask2Former's (SetCriterion; transformers' Mask2FormerLoss): the mask terms (BCE, dice)
are summed over every matched mask of the batch and divided by the number of target masks in the whole
global batch (at least 1), and the class cross-entropy is the weighted mean over every (image, query) of the
batch (its no-object weight included). Under DDP the two denominators are the processes' mean (`mean`, one
all-reduce of L + 1 numbers per step, as Mask2Former all-reduces num_masks): each process's loss is its own
sums over the global batch's mean denominator, so the DDP average of the gradients (and of the logged
losses) is exactly one process's on the global batch, however the batch is split. (Mask2Former's class term
is each process's own mean; ours is the global batch's, so a split batch trains as an unsplit one.) An image
with two masks weighs twice an image with one in the mask terms, as there.

Ignore pixels (`ignore_pixels`): "skip" (ours, the default) gives a sampled point whose bilinear footprint
touches an ignore pixel weight 0 in the matcher, BCE, dice and importance sampling; "negative" counts ignore
pixels as background of every mask (every point weighs 1), as Mask2Former's semantic mapper and
transformers' loss do. Either way a class that occurs only under ignore pixels has no target.

Points come from outside (point_sampling.PointDraws, one draw per step for the global batch), in the order
of the predictions: the initial queries' first, the final layer's last.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from hairdiff.model.mask2former.criterion import LOSS_NAMES
from hairdiff.model.mask2former.matcher import assign, batch_costs
from hairdiff.model.mask2former.point_sampling import PointDraws, draw_points, point_sample, point_weights
from hairdiff.model.mask2former.targets import DenseTargets

IGNORE_PIXELS = ("skip", "negative")  # ours: no loss on ignore pixels; Mask2Former's: negatives of every mask


def build_batch_criterion(cfg, host_assignment: bool | None = None) -> "BatchCriterion":
    """BatchCriterion with the loss weights, matching costs and point counts of a HeadConfig."""
    return BatchCriterion(cfg.num_classes, {"loss_ce": cfg.class_weight, "loss_mask": cfg.mask_weight,
                                            "loss_dice": cfg.dice_weight},
                          eos_coef=cfg.no_object_weight, num_points=cfg.num_points,
                          costs=(cfg.class_weight, cfg.mask_weight, cfg.dice_weight), host_assignment=host_assignment,
                          ignore_pixels=cfg.ignore_pixels)


def predictions(outputs: dict) -> list[dict]:
    """The head's supervised predictions in order: aux_outputs (initial queries first), then the final one."""
    return [*outputs.get("aux_outputs", []), {"pred_logits": outputs["pred_logits"], "pred_masks": outputs["pred_masks"]}]


def term_names(num_predictions: int) -> list[str]:
    """Names of the loss terms as the reference names them: the final prediction's loss_ce, loss_mask,
    loss_dice, then loss_ce_0, ... for aux prediction 0 (the initial queries), and so on."""
    suffixes = [""] + [f"_{i}" for i in range(num_predictions - 1)]
    return [f"{n}{s}" for s in suffixes for n in LOSS_NAMES]


class BatchCriterion(nn.Module):
    def __init__(self, num_classes: int, weight_dict: dict[str, float], eos_coef: float, num_points: int,
                 costs: tuple[float, float, float], oversample_ratio: float = 3.0,
                 importance_sample_ratio: float = 0.75, host_assignment: bool | None = None,
                 ignore_pixels: str = "skip"):
        """costs: the matcher's (class, mask BCE, dice) weights; host_assignment: matcher.assign's `host`;
        ignore_pixels: "skip" (weight 0 near ignore pixels) or "negative" (Mask2Former's; module docstring)."""
        super().__init__()
        unknown = set(weight_dict) - set(LOSS_NAMES)
        if unknown:
            raise ValueError(f"BatchCriterion: unknown loss weights {sorted(unknown)}; known: {LOSS_NAMES}")
        if not any(costs):
            raise ValueError("BatchCriterion: all matching costs are 0; nothing to match on")
        if ignore_pixels not in IGNORE_PIXELS:
            raise ValueError(f"BatchCriterion: ignore_pixels {ignore_pixels!r}; use one of {IGNORE_PIXELS}")
        self.ignore_pixels = ignore_pixels
        self.num_classes, self.num_points = num_classes, num_points
        self.register_buffer("weights", torch.tensor([float(weight_dict.get(n, 0.0)) for n in LOSS_NAMES]),
                             persistent=False)
        self.cost_class, self.cost_mask, self.cost_dice = costs
        self.oversample_ratio, self.importance_sample_ratio = oversample_ratio, importance_sample_ratio
        self.host_assignment = host_assignment
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef  # "no object" is the common case: down-weight it
        self.register_buffer("empty_weight", empty_weight)

    def draw(self, generator: torch.Generator | None, num_predictions: int, batch: int, device=None) -> PointDraws:
        """The points of a batch of `batch` images (point_sampling.draw_points) for this criterion's sizes."""
        return draw_points(generator, num_predictions, batch, self.num_classes, self.num_points,
                           self.oversample_ratio, self.importance_sample_ratio, device=device)

    def forward(self, outputs: dict, targets: DenseTargets, draws: PointDraws,
                mean: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (loss: the weighted sum of every prediction's terms, terms (3 * L,) detached, in term_names
        order). mean: the mean over DDP processes of a tensor (train.distributed.DistContext.mean), for the
        denominators; None in one process."""
        preds = predictions(outputs)
        n_pred, b, k = len(preds), preds[0]["pred_logits"].shape[0], self.num_classes
        if targets.masks.shape[:2] != (b, k) or draws.matcher.shape[:2] != (n_pred, b):
            raise ValueError(f"BatchCriterion: {n_pred} predictions of {b} images with {k} classes, but targets "
                             f"{tuple(targets.masks.shape[:2])} and draws {tuple(draws.matcher.shape[:2])}")
        if self.ignore_pixels == "negative":  # every pixel counts; ignore pixels are 0 in every class's mask
            targets = DenseTargets(targets.masks, targets.present, torch.ones_like(targets.valid))
        present = targets.present
        # Matching, one prediction at a time (bounds the (images, queries, points) temporaries), one assignment.
        costs = torch.stack([batch_costs(p["pred_logits"], p["pred_masks"], targets, draws.matcher[i],
                                         self.cost_class, self.cost_mask, self.cost_dice)
                             for i, p in enumerate(preds)])  # (L, B, Q, K)
        query, matched = assign(costs, present.expand(n_pred, b, k), host=self.host_assignment)  # (L, B, K)

        nll, ce_weight = self._class_loss(torch.stack([p["pred_logits"] for p in preds]).float(), query, matched)
        bce, dice = self._mask_losses(preds, targets, draws, query, matched)  # (L,) sums over the batch's masks
        # The denominators of the global batch: its target masks, and each prediction's class-weight sum.
        denominators = torch.cat([present.sum().float()[None], ce_weight])
        if mean is not None:
            denominators = mean(denominators)  # in place: a tensor of this step's own
        num_masks = denominators[0].clamp_min(1.0)
        terms = torch.stack((nll / denominators[1:].clamp_min(1e-12), bce / num_masks, dice / num_masks), -1)  # (L, 3)
        # Log order: the final prediction first, then the aux predictions from the initial queries on.
        order = [n_pred - 1, *range(n_pred - 1)]
        return (terms * self.weights).sum(), terms.detach()[order].reshape(-1)

    def _class_loss(self, logits: torch.Tensor, query: torch.Tensor,
                    matched: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """logits (L, B, Q, K+1) -> (L,) weighted cross-entropy of every query against its matched class (the
        no-object class when unmatched), summed over the batch, and (L,) the sum of those weights."""
        n_pred, q, k = logits.shape[0], logits.shape[2], self.num_classes
        hit = (query[..., None] == torch.arange(q, device=query.device)) & matched[..., None]  # (L, B, K, Q)
        cls = torch.arange(k, device=query.device)[:, None]
        target = torch.where(hit.any(2), (hit.long() * cls).sum(2), torch.full_like(query[..., :1], k))  # (L, B, Q)
        weight = self.empty_weight.to(logits)
        nll = F.cross_entropy(logits.reshape(-1, k + 1), target.reshape(-1), weight=weight, reduction="none")
        return nll.view(n_pred, -1).sum(-1), weight[target].view(n_pred, -1).sum(-1)

    def _mask_losses(self, preds: list[dict], targets: DenseTargets, draws: PointDraws, query: torch.Tensor,
                     matched: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> mask BCE and dice (L,): each prediction's sum over the batch's matched masks (each mask's BCE the
        mean over its points of weight 1)."""
        n_pred, b, k = query.shape
        h, w = preds[0]["pred_masks"].shape[-2:]
        # The matched query's mask of every slot: gathered per prediction, then one stack (L*B*K, 1, h, w).
        sel = torch.stack([p["pred_masks"].gather(1, query[i][:, :, None, None].expand(-1, -1, h, w))
                           for i, p in enumerate(preds)]).float().reshape(n_pred * b * k, 1, h, w)
        by_image = lambda x: x.transpose(0, 1).reshape(b, -1, 2)  # (L, B, K, S, 2) -> (B, L*K*S, 2)  # noqa: E731
        valid = targets.valid[:, None]
        with torch.no_grad():
            over, fill = draws.oversampled, draws.fill  # (L, B, K, S, 2), (L, B, K, F, 2)
            s = over.shape[3]
            over_ok = point_weights(valid, by_image(over)).view(b, n_pred, k, s).transpose(0, 1)
            uncertainty = point_sample(sel, over.reshape(-1, s, 2)).squeeze(1).abs_().neg_()
            uncertainty.masked_fill_(over_ok.reshape(-1, s) <= 0, -torch.inf)  # never "uncertain" on ignore pixels
            kept = int(self.importance_sample_ratio * self.num_points)
            idx = torch.topk(uncertainty, k=kept, dim=1, sorted=False).indices  # which points, not their order
            coords = torch.gather(over.reshape(-1, s, 2), 1, idx[..., None].expand(-1, -1, 2))
            if fill.shape[3]:
                coords = torch.cat([coords, fill.reshape(-1, fill.shape[3], 2)], 1)  # (L*B*K, P, 2)
            p = coords.shape[1]
            pts = coords.view(n_pred, b, k, p, 2)
            wts = point_weights(valid, by_image(pts)).view(b, n_pred, k, p).transpose(0, 1)  # (L, B, K, P)
            # Each slot's target mask at its own points: the slots as images, the predictions' points in a row.
            lab = point_sample(targets.masks.reshape(b * k, 1, *targets.masks.shape[-2:]),
                               pts.permute(1, 2, 0, 3, 4).reshape(b * k, n_pred * p, 2))
            lab = lab.view(b, k, n_pred, p).permute(2, 0, 1, 3) * wts  # (L, B, K, P)
        logits = point_sample(sel, coords).view(n_pred, b, k, p)  # the one grid_sample with a gradient
        norm = wts.sum(-1).clamp_min(1e-6)
        bce = (F.binary_cross_entropy_with_logits(logits, lab, reduction="none") * wts).sum(-1) / norm
        probs = logits.sigmoid() * wts
        dice = 1 - (2 * (probs * lab).sum(-1) + 1) / (probs.sum(-1) + (lab * wts).sum(-1) + 1)
        zero = bce.new_zeros(())
        return torch.where(matched, bce, zero).sum((1, 2)), torch.where(matched, dice, zero).sum((1, 2))
