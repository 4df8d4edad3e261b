"""Input adapter: cached backbone levels -> one head-width map per distinct stride, fine -> coarse.

Every cached level gets its own projection to the head width (a 1x1 conv + GroupNorm, or an ODISE-like
bottleneck block); levels that share a stride are summed, as ODISE does with its SD taps (e.g. the "unet"
tap set has strides 32, 16, 8, 8 and yields three maps). With a stride range [lo, hi] (ODISE: [4, 32]) a
level outside it is first resized (nearest, before its projection, as ODISE's FeatureExtractorBackbone
does) to the grid of the nearest bound and summed there: the "odise" taps at 4, 8, 16, 32, 64 give four
maps at 4..32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hairdiff.model.mask2former.layers import c2_xavier_fill, group_norm

ADAPTER_KINDS = ("conv", "bottleneck")


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 residual block with a projected shortcut, GroupNorm throughout (ODISE's projection)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        mid = max(out_ch // 4, 1)
        self.shortcut = nn.Sequential(c2_xavier_fill(nn.Conv2d(in_ch, out_ch, 1, bias=False)), group_norm(out_ch))
        self.body = nn.Sequential(
            c2_xavier_fill(nn.Conv2d(in_ch, mid, 1, bias=False)), group_norm(mid), nn.ReLU(),
            c2_xavier_fill(nn.Conv2d(mid, mid, 3, padding=1, bias=False)), group_norm(mid), nn.ReLU(),
            c2_xavier_fill(nn.Conv2d(mid, out_ch, 1, bias=False)), group_norm(out_ch))

    def forward(self, x):
        return F.relu(self.body(x) + self.shortcut(x))


def _projection(kind: str, in_ch: int, out_ch: int) -> nn.Module:
    if kind == "conv":
        return nn.Sequential(c2_xavier_fill(nn.Conv2d(in_ch, out_ch, 1)), group_norm(out_ch))
    if kind == "bottleneck":
        return Bottleneck(in_ch, out_ch)
    raise ValueError(f"unknown adapter kind {kind!r}; choose one of {ADAPTER_KINDS}")


def _folded_size(height: int, width: int, stride: int, target: int) -> tuple[int, int]:
    """A stride-`stride` map's size on the stride-`target` grid (ODISE: input size // target)."""
    return height * stride // target, width * stride // target


class LevelAdapter(nn.Module):
    """levels: LevelSpec-like objects (name, stride, channels, height, width)."""

    def __init__(self, levels, out_dim: int, kind: str = "conv", stride_range: tuple[int, int] | None = None):
        super().__init__()
        if not levels:
            raise ValueError("the head needs at least one feature level (the store lists none)")
        names = [lv.name for lv in levels]
        if len(set(names)) != len(names):
            raise ValueError(f"feature levels have duplicate names: {names}")
        lo, hi = stride_range or (1, float("inf"))
        self.target: dict[str, tuple[int, int]] = {}  # level name -> (cached stride, stride it is summed at)
        by_stride: dict[int, list] = {}
        for lv in levels:
            if lv.channels <= 0 or lv.stride <= 0:
                raise ValueError(f"level {lv.name!r} has channels={lv.channels}, stride={lv.stride}; both must be > 0")
            target = int(min(max(lv.stride, lo), hi))
            self.target[lv.name] = (int(lv.stride), target)
            by_stride.setdefault(target, []).append(lv)
        for stride, group in by_stride.items():
            sizes = {_folded_size(lv.height, lv.width, lv.stride, stride) for lv in group}
            if len(sizes) > 1:
                raise ValueError(f"levels {[lv.name for lv in group]} share stride {stride} but have different "
                                 f"sizes {sorted(sizes)}; they cannot be summed")
        self.strides = sorted(by_stride)
        self.groups = [[lv.name for lv in by_stride[s]] for s in self.strides]
        self.names = names
        if len({n.replace(".", "_") for n in names}) != len(names):
            raise ValueError(f"level names {names} collide once '.' becomes '_'; rename the taps")
        # Module keys cannot contain "."; tap names like "up_blocks.0" become "up_blocks_0".
        self.proj = nn.ModuleDict({lv.name.replace(".", "_"): _projection(kind, lv.channels, out_dim)
                                   for lv in levels})

    def forward(self, feats: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        missing = [n for n in self.names if n not in feats]
        if missing:
            raise KeyError(f"features lack level(s) {missing} the head was built for (got {sorted(feats)}); "
                           f"train and predict on stores made with the same taps")
        out = []
        for group in self.groups:
            total = None
            for name in group:
                proj = self.proj[name.replace(".", "_")]
                # Cached features are float16; run the projection in the head's own dtype.
                x = feats[name].to(next(proj.parameters()).dtype)
                stride, target = self.target[name]
                if stride != target:
                    x = F.interpolate(x, size=_folded_size(*x.shape[-2:], stride, target), mode="nearest")
                y = proj(x)
                total = y if total is None else total + y
            out.append(total)
        return out
