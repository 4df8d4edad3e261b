"""Small building blocks shared by the port's modules: Mask2Former's normalisation and initialisation."""
from __future__ import annotations

from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with Mask2Former's 32 groups, or the largest group count dividing `channels`."""
    groups = max(g for g in range(1, min(32, channels) + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


def c2_xavier_fill(conv: nn.Conv2d) -> nn.Conv2d:
    """Caffe2-style Xavier init (kaiming uniform, a=1) used for Mask2Former's convolutions."""
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv
