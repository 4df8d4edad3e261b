"""Multi-scale deformable attention (Zhu et al., Deformable DETR) in pure PyTorch via grid_sample.

Each query looks at `n_points` learned offsets around its reference point on every level, per head, and
mixes the bilinearly sampled values with softmax weights. No custom CUDA kernel: grid_sample does the
sampling, which keeps the head portable (CPU tests, any GPU) at a modest speed cost.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def reference_points(shapes: list[tuple[int, int]], device=None) -> torch.Tensor:
    """(1, sum H*W, 1, 2) pixel-centre (x, y) of every token, in [0, 1] of its own level."""
    refs = []
    for h, w in shapes:
        ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        refs.append(torch.stack((gx.reshape(-1), gy.reshape(-1)), dim=-1))
    return torch.cat(refs, 0)[None, :, None, :]


def offset_scale(shapes: list[tuple[int, int]], device=None) -> torch.Tensor:
    """(L, 2) float32: (W, H) of each level, to turn pixel offsets into [0, 1] coordinates.

    Filled value by value on the device: a tensor made from a Python list would be a copy from pageable host
    memory, which waits for the device to finish its queued work (once per layer per step).
    """
    out = torch.empty(len(shapes), 2, dtype=torch.float32, device=device)
    for i, (h, w) in enumerate(shapes):
        out[i, 0], out[i, 1] = w, h
    return out


def deformable_sample(value: torch.Tensor, shapes: list[tuple[int, int]], locations: torch.Tensor,
                      weights: torch.Tensor) -> torch.Tensor:
    """Weighted sum of bilinear samples.

    value (B, S, M, D) per-head values of all levels (S = sum H*W); locations (B, Q, M, L, P, 2) as (x, y)
    in [0, 1]; weights (B, Q, M, L, P). Returns (B, Q, M*D). Computed in float32 (grid_sample and the
    weighted sum are the numerically sensitive part under bf16 autocast).
    """
    b, _, m, d = value.shape
    q, n_levels, n_points = locations.shape[1], locations.shape[3], locations.shape[4]
    out_dtype = value.dtype
    value = value.float()
    grids = (2 * locations.float() - 1).permute(0, 2, 1, 3, 4, 5).reshape(b * m, q, n_levels, n_points, 2)
    samples = []
    for lvl, v in enumerate(value.split([h * w for h, w in shapes], dim=1)):
        h, w = shapes[lvl]
        v = v.permute(0, 2, 3, 1).reshape(b * m, d, h, w)
        samples.append(F.grid_sample(v, grids[:, :, lvl], mode="bilinear", padding_mode="zeros",
                                     align_corners=False))  # (B*M, D, Q, P)
    samples = torch.stack(samples, dim=-2).flatten(-2)  # (B*M, D, Q, L*P)
    w = weights.float().permute(0, 2, 1, 3, 4).reshape(b * m, 1, q, n_levels * n_points)
    out = (samples * w).sum(-1).view(b, m * d, q).transpose(1, 2)
    return out.to(out_dtype).contiguous()


class MSDeformAttn(nn.Module):
    """Deformable self-attention over a flattened multi-scale token sequence."""

    def __init__(self, dim: int, n_heads: int, n_levels: int, n_points: int):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"deformable attention: width {dim} is not divisible by {n_heads} heads")
        self.dim, self.n_heads, self.n_levels, self.n_points = dim, n_heads, n_levels, n_points
        self.sampling_offsets = nn.Linear(dim, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(dim, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Offsets start as a ring of directions (one per head), point k at distance k+1: every head begins
        # by looking somewhere different, as in Deformable DETR.
        nn.init.zeros_(self.sampling_offsets.weight)
        theta = torch.arange(self.n_heads, dtype=torch.float32) * (2 * math.pi / self.n_heads)
        ring = torch.stack((theta.cos(), theta.sin()), -1)
        ring = ring / ring.abs().max(-1, keepdim=True).values
        ring = ring.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        ring = ring * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(ring.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, query: torch.Tensor, value_in: torch.Tensor, shapes: list[tuple[int, int]],
                refs: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """query (B, Q, C) (position already added), value_in (B, S, C), refs (B|1, Q, L|1, 2) -> (B, Q, C).
        scale: offset_scale(shapes), when the caller made it once for all its layers."""
        b, q, _ = query.shape
        if value_in.shape[1] != sum(h * w for h, w in shapes):
            raise ValueError(f"deformable attention: {value_in.shape[1]} tokens but level shapes {shapes}")
        m, n_levels, n_points = self.n_heads, self.n_levels, self.n_points
        value = self.value_proj(value_in).view(b, -1, m, self.dim // m)
        offsets = self.sampling_offsets(query).view(b, q, m, n_levels, n_points, 2).float()
        weights = self.attention_weights(query).view(b, q, m, n_levels * n_points).float().softmax(-1)
        weights = weights.view(b, q, m, n_levels, n_points)
        # Offsets are in pixels of each level; divide by (W, H) to move in normalised coordinates.
        norm = offset_scale(shapes, query.device) if scale is None else scale
        locations = refs.float()[:, :, None, :, None, :] + offsets / norm[None, None, None, :, None, :]
        return self.output_proj(deformable_sample(value, shapes, locations, weights))
