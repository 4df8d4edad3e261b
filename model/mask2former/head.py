"""The segmentation head: input adapter -> pixel decoder -> masked-attention decoder (Mask2Former).

`Mask2FormerHead(levels, cfg)(feats)` maps cached backbone levels to per-query class logits and mask
logits at `cfg.mask_stride`; `semantic_probs` turns them into per-class probability maps.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hairdiff.core.errors import UsageError
from hairdiff.model.mask2former.adapter import ADAPTER_KINDS, LevelAdapter
from hairdiff.model.mask2former.batch_criterion import IGNORE_PIXELS
from hairdiff.model.mask2former.pixel_decoder import ATTENDED_LEVELS, MSDeformAttnPixelDecoder
from hairdiff.model.mask2former.transformer_decoder import MaskedAttentionDecoder

# A head small enough to train for a demo on a laptop CPU in minutes.
SMALL_PRESET = {"hidden_dim": 64, "num_queries": 16, "nheads": 4, "dim_feedforward": 256, "dec_layers": 3,
                "enc_layers": 2, "enc_dim_feedforward": 256, "mask_dim": 64, "num_points": 1024}


@dataclass
class HeadConfig:
    """Mask2Former's semantic-segmentation defaults (Cheng et al. 2022), two classes: 0 background, 1 hair."""

    num_classes: int = 2
    num_queries: int = 100
    hidden_dim: int = 256           # query width
    nheads: int = 8                 # decoder and deformable-encoder heads
    dim_feedforward: int = 2048     # decoder FFN
    dec_layers: int = 9             # masked-attention layers (predictions: 1 initial + dec_layers)
    enc_layers: int = 6             # deformable-attention encoder layers
    enc_points: int = 4             # sampling points per head and level
    enc_dim_feedforward: int = 1024
    conv_dim: int | None = None     # adapter / pixel-decoder width; None = hidden_dim (256 in Mask2Former)
    mask_dim: int = 256
    dropout: float = 0.0
    adapter: str = "conv"           # "conv" (1x1 conv + GroupNorm) or "bottleneck" (ODISE-like)
    # Levels outside [lo, hi] are resized to the nearest bound and summed there (ODISE: strides 4..32).
    stride_range: tuple[int, int] | None = (4, 32)
    # Stride of the mask features; a coarser finest level is brought there by learned x2 upsampling.
    mask_stride: int | None = 4
    # Loss and matching (read by criterion.build_criterion): the one place these defaults live.
    num_points: int = 12544
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    # "skip" (ours): no loss or matching cost on ignore pixels; "negative" (Mask2Former's): they are background
    # of every mask. batch_criterion.py says how and why.
    ignore_pixels: str = "skip"

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type in ("int", "float") and (not isinstance(v, (int, float)) or isinstance(v, bool)):
                raise UsageError(f"--head {f.name}={v!r}: expected a number")
        self._check_bounds()
        width = self.width
        for name, dim in (("hidden_dim", self.hidden_dim), ("conv_dim", width)):
            if dim < 2 or dim % self.nheads:
                raise UsageError(f"--head {name}={dim}: must be divisible by nheads={self.nheads}")
        if self.hidden_dim % 2 or width % 2:
            raise UsageError("--head: hidden_dim and conv_dim must be even (sine position embedding)")
        if self.ignore_pixels not in IGNORE_PIXELS:
            raise UsageError(f"--head ignore_pixels={self.ignore_pixels!r}: choose one of {', '.join(IGNORE_PIXELS)}")
        if self.adapter not in ADAPTER_KINDS:
            raise UsageError(f"--head adapter={self.adapter!r}: choose one of {', '.join(ADAPTER_KINDS)}")
        if self.stride_range is not None:
            self.stride_range = tuple(self.stride_range)  # JSON and --head give lists
            rng = self.stride_range
            if len(rng) != 2 or not all(_power_of_two(v) for v in rng) or rng[0] > rng[1]:
                raise UsageError(f"--head stride_range={list(self.stride_range)}: use [lo, hi], powers of two with "
                                 f"lo <= hi (ODISE: [4, 32])")
        if self.mask_stride is not None and not _power_of_two(self.mask_stride):
            raise UsageError(f"--head mask_stride={self.mask_stride}: use a power of two (Mask2Former: 4)")

    def _check_bounds(self) -> None:
        """Every number within what the head can be built with (HEAD_BOUNDS), each weight finite."""
        import math

        for name, (lo, hi) in HEAD_BOUNDS.items():
            v = getattr(self, name)
            if v is None:
                continue
            kind = int if isinstance(lo, int) else (int, float)
            if isinstance(v, kind) and not isinstance(v, bool) and math.isfinite(v) and lo <= v <= hi:
                continue
            whole = "a whole number" if kind is int else "a number"
            raise UsageError(f"--head {name}={v!r}: use {whole} from {lo} to {hi}")

    @property
    def width(self) -> int:
        return self.hidden_dim if self.conv_dim is None else self.conv_dim


# What each number may be: counts >= 1 (layers >= 0), widths and counts bounded by what a head can be built with
# (every one sizes weights or activations), weights finite; labels are uint8 with 255 = ignore.
HEAD_BOUNDS = {"num_classes": (1, 254), "num_queries": (1, 1000), "hidden_dim": (2, 8192), "nheads": (1, 64),
               "dim_feedforward": (1, 65536), "dec_layers": (0, 64), "enc_layers": (0, 64), "enc_points": (1, 64),
               "enc_dim_feedforward": (1, 65536), "conv_dim": (2, 8192), "mask_dim": (1, 8192),
               "dropout": (0.0, 0.99), "num_points": (1, 1 << 20), "class_weight": (0.0, 1e6),
               "mask_weight": (0.0, 1e6), "dice_weight": (0.0, 1e6), "no_object_weight": (0.0, 1e6)}

# Fields added after the first release, with the values that reproduce a head whose run.json predates them.
LEGACY = {"stride_range": None, "mask_stride": None}


def _power_of_two(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1 and v & (v - 1) == 0


def build_head_config(overrides: dict | None = None, small: bool = False) -> HeadConfig:
    """Mask2Former's defaults, the small preset on top when `small`, then `overrides` (--head NAME=VALUE)."""
    names = {f.name for f in dataclasses.fields(HeadConfig)}
    kw = dict(SMALL_PRESET) if small else {}
    kw.update(overrides or {})
    unknown = sorted(set(kw) - names)
    if unknown:
        import difflib

        near = [m for u in unknown for m in difflib.get_close_matches(u, names, n=1)]
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise UsageError(f"--head: unknown setting(s) {', '.join(unknown)}{hint}; HeadConfig has "
                         f"{', '.join(sorted(names))}")
    return dataclasses.replace(HeadConfig(), **kw)


class Mask2FormerHead(nn.Module):
    def __init__(self, levels, cfg: HeadConfig | None = None):
        super().__init__()
        cfg = cfg or HeadConfig()
        self.cfg = cfg
        self.levels = list(levels)
        width = cfg.width
        self.adapter = LevelAdapter(self.levels, width, cfg.adapter, stride_range=cfg.stride_range)
        strides = self.adapter.strides
        if cfg.mask_stride is not None and cfg.mask_stride > strides[0]:
            raise UsageError(f"--head mask_stride={cfg.mask_stride} is coarser than the finest feature level "
                             f"(stride {strides[0]}): use {strides[0]} or less")
        self.pixel_decoder = MSDeformAttnPixelDecoder(
            [width] * len(strides), strides, conv_dim=width, mask_dim=cfg.mask_dim, enc_layers=cfg.enc_layers,
            n_heads=cfg.nheads, n_points=cfg.enc_points, dim_feedforward=cfg.enc_dim_feedforward,
            dropout=cfg.dropout, mask_stride=cfg.mask_stride)
        self.predictor = MaskedAttentionDecoder(
            width, cfg.num_classes, hidden_dim=cfg.hidden_dim, num_queries=cfg.num_queries, n_heads=cfg.nheads,
            dim_feedforward=cfg.dim_feedforward, dec_layers=cfg.dec_layers, mask_dim=cfg.mask_dim,
            num_levels=min(ATTENDED_LEVELS, len(strides)), dropout=cfg.dropout)

    @property
    def output_stride(self) -> int:
        """Stride of pred_masks relative to the store resolution."""
        return self.pixel_decoder.mask_stride

    def forward(self, feats: dict[str, torch.Tensor]) -> dict:
        """feats: level name -> (B, C, H, W). Returns pred_logits (B, Q, K+1), pred_masks (B, Q, H0, W0),
        aux_outputs (one dict per earlier prediction, initial queries first)."""
        mask_features, memory = self.pixel_decoder(self.adapter(feats))
        return self.predictor(memory, mask_features)


def semantic_probs(pred_logits, pred_masks: torch.Tensor | None = None, out_size=None) -> torch.Tensor:
    """(B, K, h, w) per-class probabilities: sum over queries of P(class | query) * sigmoid(mask logit).

    Accepts either (pred_logits, pred_masks) or the head's output dict. The "no object" column is dropped,
    so a pixel's values need not sum to 1. out_size: (h, w) to resize to (e.g. the store resolution). As in
    Mask2Former's semantic inference the mask *logits* are resized (bilinear), then the sigmoid is taken:
    a logit map carries its boundary between samples, a probability map only blurs it. One image at a time,
    so memory holds Q maps of one image at out_size, not of the batch. Computed in float32.
    """
    if isinstance(pred_logits, dict):
        pred_logits, pred_masks = pred_logits["pred_logits"], pred_logits["pred_masks"]
    if pred_masks is None:
        raise TypeError("semantic_probs needs pred_masks (or the head's output dict)")
    cls = pred_logits.float().softmax(-1)[..., :-1]
    resize = out_size is not None and tuple(pred_masks.shape[-2:]) != tuple(out_size)
    probs = []
    for b in range(pred_masks.shape[0]):
        logits = pred_masks[b:b + 1].float()
        if resize:
            logits = F.interpolate(logits, size=tuple(out_size), mode="bilinear", align_corners=False)
        probs.append(torch.einsum("qk,qhw->khw", cls[b], logits[0].sigmoid()))
    return torch.stack(probs)
