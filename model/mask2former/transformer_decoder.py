"""Mask2Former's masked-attention transformer decoder and its prediction heads.

Learnable queries cycle round-robin over the attended scales (coarse -> fine). Each layer: masked
cross-attention (a query only sees pixels its previous mask prediction covers) -> self-attention -> FFN,
all post-norm. After the initial queries and after every layer, a shared LayerNorm feeds the class head
(num_classes + 1, the last being "no object") and a 3-layer MLP whose output is dotted with the per-pixel
mask features; every one of those predictions is supervised (deep supervision).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hairdiff.model.mask2former.layers import c2_xavier_fill
from hairdiff.model.mask2former.position import sine_position_embedding


def query_masks(embed: torch.Tensor, mask_features: torch.Tensor) -> torch.Tensor:
    """embed (B, Q, C) . mask_features (B, C, H, W) -> mask logits (B, Q, H, W), held pixel-major (channels-last
    strides: each pixel's Q logits side by side). The same dot products as einsum("bqc,bchw->bqhw"), laid out
    for what reads them: the matcher samples every query at shared points (a pixel's row of Q values), and
    the loss gathers a few queries' maps."""
    b, _, h, w = mask_features.shape
    pixels = mask_features.flatten(2).transpose(1, 2)  # (B, H*W, C), a view
    return torch.bmm(pixels, embed.transpose(1, 2)).view(b, h, w, -1).permute(0, 3, 1, 2)


class MLP(nn.Module):
    """Linear layers with ReLU between them (none after the last)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MaskedAttentionLayer(nn.Module):
    """Masked cross-attention -> self-attention -> FFN, each followed by residual add and LayerNorm."""

    def __init__(self, dim: int, n_heads: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.cross_attn = nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
        self.norm_cross = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
        self.norm_self = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, dim)
        self.norm_ffn = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, tgt, query_pos, memory, memory_pos, attn_mask):
        x = self.cross_attn(tgt + query_pos, memory + memory_pos, memory, attn_mask=attn_mask, need_weights=False)[0]
        tgt = self.norm_cross(tgt + self.dropout(x))
        q = tgt + query_pos
        x = self.self_attn(q, q, tgt, need_weights=False)[0]
        tgt = self.norm_self(tgt + self.dropout(x))
        x = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm_ffn(tgt + self.dropout(x))


class MaskedAttentionDecoder(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, hidden_dim: int = 256, num_queries: int = 100,
                 n_heads: int = 8, dim_feedforward: int = 2048, dec_layers: int = 9, mask_dim: int = 256,
                 num_levels: int = 3, dropout: float = 0.0):
        super().__init__()
        self.num_levels, self.n_heads, self.hidden_dim = num_levels, n_heads, hidden_dim
        self.level_embed = nn.Embedding(num_levels, hidden_dim)
        # A 1x1 projection only when the pixel decoder is wider/narrower than the queries.
        self.input_proj = nn.ModuleList(
            c2_xavier_fill(nn.Conv2d(in_channels, hidden_dim, 1)) if in_channels != hidden_dim else nn.Identity()
            for _ in range(num_levels))
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.layers = nn.ModuleList(MaskedAttentionLayer(hidden_dim, n_heads, dim_feedforward, dropout)
                                    for _ in range(dec_layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    def predict(self, queries: torch.Tensor, mask_features: torch.Tensor, mask_hw: tuple[int, int]):
        """Class logits, mask logits, and the attention mask for the next layer (True = may not attend)."""
        x = self.decoder_norm(queries)
        logits = self.class_embed(x)
        masks = query_masks(self.mask_embed(x), mask_features)
        with torch.no_grad():
            small = F.interpolate(masks, size=mask_hw, mode="bilinear", align_corners=False)
            attn = small.float().sigmoid().flatten(2) < 0.5  # (B, Q, h*w)
            # A query whose mask is empty would attend to nothing (softmax of all -inf = NaN): let it see all.
            attn &= ~attn.all(-1, keepdim=True)
            attn = attn.repeat_interleave(self.n_heads, dim=0)  # (B*heads, Q, h*w), head-major per image
        return logits, masks, attn

    def forward(self, memory: list[torch.Tensor], mask_features: torch.Tensor) -> dict:
        """memory: attended maps coarse -> fine (B, C, h, w); mask_features (B, mask_dim, H0, W0)."""
        if len(memory) != self.num_levels:
            raise ValueError(f"transformer decoder built for {self.num_levels} scales, got {len(memory)}")
        srcs, poss, sizes = [], [], []
        for i, m in enumerate(memory):
            h, w = m.shape[-2:]
            sizes.append((h, w))
            src = self.input_proj[i](m).flatten(2) + self.level_embed.weight[i][None, :, None]
            srcs.append(src.transpose(1, 2))
            poss.append(sine_position_embedding(h, w, self.hidden_dim, device=m.device).flatten(2).transpose(1, 2))
        b = mask_features.shape[0]
        tgt = self.query_feat.weight.unsqueeze(0).expand(b, -1, -1)
        qpos = self.query_embed.weight.unsqueeze(0).expand(b, -1, -1)

        logits, masks, attn = self.predict(tgt, mask_features, sizes[0])
        all_logits, all_masks = [logits], [masks]
        for i, layer in enumerate(self.layers):
            lvl = i % self.num_levels
            tgt = layer(tgt, qpos, srcs[lvl], poss[lvl].to(srcs[lvl].dtype), attn)
            logits, masks, attn = self.predict(tgt, mask_features, sizes[(i + 1) % self.num_levels])
            all_logits.append(logits)
            all_masks.append(masks)
        return {"pred_logits": all_logits[-1], "pred_masks": all_masks[-1],
                "aux_outputs": [{"pred_logits": lg, "pred_masks": mk}
                                for lg, mk in zip(all_logits[:-1], all_masks[:-1])]}
