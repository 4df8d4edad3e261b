"""Sine position embedding of a 2-D feature map (DETR style, normalised to [0, 2*pi])."""
from __future__ import annotations

import math

import torch


def sine_position_embedding(height: int, width: int, dim: int, device=None, temperature: float = 10000.0,
                            scale: float = 2 * math.pi) -> torch.Tensor:
    """(1, dim, height, width) float32: dim/2 channels encode y, dim/2 encode x (sin/cos interleaved).

    Always float32: under bf16 autocast the high frequencies would lose all precision.
    """
    if dim % 2:
        raise ValueError(f"sine position embedding needs an even dimension, got {dim}")
    feats = dim // 2
    eps = 1e-6
    # Pixel i (1-based) of n sits at i/n of the extent; normalising keeps every scale in the same range.
    y = torch.arange(1, height + 1, dtype=torch.float32, device=device) / (height + eps) * scale
    x = torch.arange(1, width + 1, dtype=torch.float32, device=device) / (width + eps) * scale
    k = torch.arange(feats, dtype=torch.float32, device=device)
    freq = temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / feats)
    py = y[:, None] / freq  # (H, feats)
    px = x[:, None] / freq  # (W, feats)
    py = torch.stack((py[:, 0::2].sin(), py[:, 1::2].cos()), dim=2).flatten(1)
    px = torch.stack((px[:, 0::2].sin(), px[:, 1::2].cos()), dim=2).flatten(1)
    pos = torch.cat((py[:, None, :].expand(height, width, feats), px[None, :, :].expand(height, width, feats)), dim=2)
    return pos.permute(2, 0, 1).unsqueeze(0).contiguous()
