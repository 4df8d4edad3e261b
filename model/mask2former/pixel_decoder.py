"""Mask2Former's pixel decoder: a deformable-attention encoder over the coarsest scales plus an FPN path.

Input: feature maps ordered fine -> coarse (one per stride). The (up to) 3 coarsest go through
`enc_layers` multi-scale deformable-attention layers (sine position + learned level embedding); every
finer map joins via the FPN top-down path (lateral 1x1 conv, upsampled coarser map, 3x3 conv). The
finest map of that path, through a 1x1 "mask projection", gives the per-pixel mask features; the
encoder outputs (coarse -> fine) are the memory the transformer decoder attends to.

Mask features at `mask_stride` (Mask2Former: 4) when the finest input is coarser (the default "unet"
taps stop at stride 8): each missing factor of 2 is one learned upsampling stage, a 2x2 stride-2
transposed conv (as ViTDet's simple feature pyramid builds stride 4) then a 3x3 conv (as an FPN output
conv, so neighbouring cells mix), each with GroupNorm + ReLU. None: mask features at the finest stride.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hairdiff.model.mask2former.layers import c2_xavier_fill, group_norm
from hairdiff.model.mask2former.msdeform_attn import MSDeformAttn, offset_scale, reference_points
from hairdiff.model.mask2former.position import sine_position_embedding

ATTENDED_LEVELS = 3  # Mask2Former attends over strides 8, 16, 32


class DeformEncoderLayer(nn.Module):
    """Deformable self-attention -> add & norm -> FFN -> add & norm (post-norm)."""

    def __init__(self, dim: int, n_heads: int, n_levels: int, n_points: int, dim_feedforward: int,
                 dropout: float):
        super().__init__()
        self.self_attn = MSDeformAttn(dim, n_heads, n_levels, n_points)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, pos, shapes, refs, scale=None):
        x = self.norm1(x + self.dropout(self.self_attn(x + pos, x, shapes, refs, scale)))
        return self.norm2(x + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x))))))


def upsample_stage(dim: int) -> nn.Sequential:
    """x2: 2x2 stride-2 transposed conv -> GroupNorm -> ReLU -> 3x3 conv -> GroupNorm -> ReLU.

    The ReLUs work in place: the GroupNorm outputs they overwrite are needed by nothing else (GroupNorm's
    backward reads its input), which saves a stride-4 map per ReLU in memory and one pass over it.
    """
    return nn.Sequential(nn.ConvTranspose2d(dim, dim, 2, stride=2, bias=False), group_norm(dim), nn.ReLU(inplace=True),
                         nn.Conv2d(dim, dim, 3, padding=1, bias=False), group_norm(dim), nn.ReLU(inplace=True))


class MSDeformAttnPixelDecoder(nn.Module):
    def __init__(self, in_channels: list[int], strides: list[int], conv_dim: int = 256, mask_dim: int = 256,
                 enc_layers: int = 6, n_heads: int = 8, n_points: int = 4, dim_feedforward: int = 1024,
                 dropout: float = 0.0, mask_stride: int | None = None):
        super().__init__()
        if not in_channels or len(in_channels) != len(strides):
            raise ValueError(f"pixel decoder: need one channel count per stride, got {in_channels} / {strides}")
        if list(strides) != sorted(strides) or len(set(strides)) != len(strides):
            raise ValueError(f"pixel decoder: strides must be distinct and ordered fine -> coarse, got {strides}")
        self.strides = list(strides)
        self.num_levels = len(strides)
        self.num_attended = min(ATTENDED_LEVELS, self.num_levels)
        self.num_fpn = self.num_levels - self.num_attended
        # Attended levels are held coarse -> fine (the order the transformer decoder cycles through).
        attended = list(in_channels[self.num_fpn:])[::-1]
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, conv_dim, 1), group_norm(conv_dim)) for c in attended)
        self.level_embed = nn.Parameter(torch.empty(self.num_attended, conv_dim))
        self.layers = nn.ModuleList(
            DeformEncoderLayer(conv_dim, n_heads, self.num_attended, n_points, dim_feedforward, dropout)
            for _ in range(enc_layers))
        # FPN levels are held fine -> coarse (index 0 = finest).
        self.lateral_convs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, conv_dim, 1, bias=False), group_norm(conv_dim))
            for c in in_channels[:self.num_fpn])
        self.output_convs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(conv_dim, conv_dim, 3, padding=1, bias=False), group_norm(conv_dim), nn.ReLU())
            for _ in range(self.num_fpn))
        self.mask_stride = strides[0] if mask_stride is None else int(mask_stride)
        factor = strides[0] // self.mask_stride
        if self.mask_stride < 1 or factor < 1 or strides[0] % self.mask_stride or factor & (factor - 1):
            raise ValueError(f"pixel decoder: mask stride {mask_stride} must divide the finest stride {strides[0]} "
                             f"by a power of two")
        self.mask_upsample = nn.ModuleList(upsample_stage(conv_dim) for _ in range(factor.bit_length() - 1))
        self.mask_projection = nn.Conv2d(conv_dim, mask_dim, 1)
        self.conv_dim = conv_dim
        # Run the stride-4 part (x2 stages, mask projection) in channels-last memory: a layout, not a setting of
        # what is computed (train.step.TrainStep sets it from --channels-last; checkpoints do not record it).
        self.channels_last = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for layer in self.layers:
            for p in layer.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
            layer.self_attn.reset_parameters()
        nn.init.normal_(self.level_embed)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)
        for seq in (*self.lateral_convs, *self.output_convs):
            c2_xavier_fill(seq[0])
        for stage in self.mask_upsample:
            c2_xavier_fill(stage[0])
            c2_xavier_fill(stage[3])
        c2_xavier_fill(self.mask_projection)

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """features fine -> coarse -> (mask_features (B, mask_dim, H0, W0), memory: attended maps coarse -> fine)."""
        if len(features) != self.num_levels:
            raise ValueError(f"pixel decoder built for {self.num_levels} levels, got {len(features)}")
        attended = features[self.num_fpn:][::-1]
        srcs, poss, shapes = [], [], []
        for i, x in enumerate(attended):
            y = self.input_proj[i](x)
            h, w = y.shape[-2:]
            shapes.append((h, w))
            srcs.append(y.flatten(2).transpose(1, 2))
            pos = sine_position_embedding(h, w, self.conv_dim, device=y.device).flatten(2).transpose(1, 2)
            poss.append(pos + self.level_embed[i].view(1, 1, -1).float())
        tokens = torch.cat(srcs, 1)
        pos = torch.cat(poss, 1).to(tokens.dtype)
        refs, scale = reference_points(shapes, device=tokens.device), offset_scale(shapes, device=tokens.device)
        for layer in self.layers:
            tokens = layer(tokens, pos, shapes, refs, scale)
        b = tokens.shape[0]
        memory = [t.transpose(1, 2).reshape(b, -1, h, w)
                  for t, (h, w) in zip(tokens.split([h * w for h, w in shapes], 1), shapes)]
        out = memory[-1]
        for i in reversed(range(self.num_fpn)):  # coarse -> fine
            lat = self.lateral_convs[i](features[i])
            out = self.output_convs[i](lat + F.interpolate(out, size=lat.shape[-2:], mode="bilinear",
                                                           align_corners=False))
        if self.channels_last and self.mask_upsample:
            out = out.contiguous(memory_format=torch.channels_last)
        for stage in self.mask_upsample:
            out = stage(out)
        return self.mask_projection(out), memory
