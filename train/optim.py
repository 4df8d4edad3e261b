"""AdamW with Mask2Former's weight-decay rule (its train_net.py build_optimizer).

What gets no weight decay, exactly as there (SOLVER.WEIGHT_DECAY_NORM = WEIGHT_DECAY_EMBED = 0): every
parameter that a normalisation module owns directly (weight and bias of BatchNorm*, SyncBatchNorm,
GroupNorm, InstanceNorm*, LayerNorm, LocalResponseNorm) and the weight of every nn.Embedding. Everything
else decays, biases of convs and linears included, and so do plain nn.Parameters owned by other modules
(the pixel decoder's level_embed is one; Mask2Former's is one too). Its name rule for Swin's
relative_position_bias_table / absolute_pos_embed has nothing to match in this head.

Mask2Former gives each parameter a group of its own; with one learning rate for all of them that is the
same update as two groups (decay, no decay), which is what we keep: the checkpoint records two groups.
"""
from __future__ import annotations

import torch
from torch import nn

NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.InstanceNorm1d,
              nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm, nn.LocalResponseNorm)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """[{params: decayed, weight_decay}, {params: norms and embeddings, weight_decay: 0}], in module order."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:  # a shared parameter is counted once, where first met
                continue
            seen.add(id(p))
            (no_decay if isinstance(module, (*NORM_TYPES, nn.Embedding)) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    # fused: one kernel per step, and no host read of the step counters (foreach reads each one with .item())
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, weight_decay=weight_decay, fused=True)
