"""Augmented views, extracted and cached like images: `pipeline extract --views RECIPE`.

Caching features once must not mean training on one fixed view. Each view is computed from the augmented
image itself (flipped, rescaled, cropped before the letterbox, then the backbone), never by transforming
cached features, and its label is transformed alike (nearest neighbour).

Grammar: terms joined by '+', each adding views to the original one:
  flip                 the horizontal mirror image
  scale:S1,S2,...      one view per factor S: the image resized by S (S > 1: a seeded random crop back to the
                       original size, as Mask2Former's scale jitter + crop does; S < 1: the smaller image)
  lsj:K                K views of large-scale jitter: a random factor in [0.5, 2.0], a random crop to the
                       original size when larger, and a mirror with probability 1/2 (Mask2Former's and ODISE's
                       training augmentation, drawn once per view)
e.g. `flip`, `flip+scale:0.75,1.25`, `lsj:4`. Randomness comes from (--seed, the sample's id, the view),
so the same command extracts the same views.

Layout in the store (view-major): samples 0..N-1 are the original images, then every image's first view,
and so on; a view's id is `<id>@<view>`, e.g. `Frame00001@flip`. Store attribute `views`: the recipe, the
view names and N, which training uses to draw one view per image per visit.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image

from hairdiff.core.errors import UsageError

RULE = "views-v1"
LSJ_RANGE = (0.5, 2.0)


@dataclass(frozen=True)
class View:
    name: str  # "flip", "scale0.75", "lsj2"
    kind: str  # "flip" | "scale" | "lsj"
    factor: float = 1.0


def parse_views(recipe: str | None) -> list[View]:
    """The extra views a recipe names (the original view is always there and not listed)."""
    if not recipe:
        return []
    views: list[View] = []
    for term in str(recipe).split("+"):
        term = term.strip()
        if term == "flip":
            views.append(View("flip", "flip"))
        elif m := re.fullmatch(r"scale:([0-9.,\s]+)", term):
            for s in m.group(1).split(","):
                try:
                    f = float(s)
                except ValueError:
                    f = -1.0
                if not 0.1 <= f <= 4.0 or f == 1.0:
                    raise UsageError(f"--views {recipe!r}: scale factor {s.strip()!r} must be in 0.1..4 and not 1")
                views.append(View(f"scale{f:g}", "scale", f))
        elif m := re.fullmatch(r"lsj:(\d+)", term):
            k = int(m.group(1))
            if not 1 <= k <= 64:
                raise UsageError(f"--views {recipe!r}: lsj takes 1..64 views")
            views += [View(f"lsj{j}", "lsj") for j in range(k)]
        else:
            raise UsageError(f"--views {recipe!r}: unknown term {term!r}; use flip, scale:S1,S2,... or lsj:K "
                             f"joined by '+', e.g. flip+scale:0.75,1.25")
    names = [v.name for v in views]
    if len(set(names)) != len(names):
        raise UsageError(f"--views {recipe!r} names a view twice")
    return views


def record(recipe: str | None, seed: int) -> dict | None:
    """What the views add to a store's fingerprint (None without views: fingerprints stay as they were)."""
    views = parse_views(recipe)
    if not views:
        return None
    return {"rule": RULE, "recipe": [v.name for v in views], "seed": seed, "lsj_range": list(LSJ_RANGE),
            "resample": "image bicubic, label nearest; crops seeded by (seed, id, view)"}


def _rng(seed: int, sample_id: str, view: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}\0{sample_id}\0{view}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _resize(a: np.ndarray, size: tuple[int, int], label: bool) -> np.ndarray:
    h, w = size
    return np.asarray(Image.fromarray(a).resize((w, h), Image.NEAREST if label else Image.BICUBIC))


def _rescale_crop(image, label, factor: float, rng) -> tuple[np.ndarray, np.ndarray]:
    h, w = image.shape[:2]
    nh, nw = max(1, round(h * factor)), max(1, round(w * factor))
    # The label may be stored at another resolution (CelebAMask-HQ: half the image's): scale it alike.
    lh, lw = label.shape[:2]
    img = _resize(image, (nh, nw), False)
    lab = _resize(label, (max(1, round(lh * factor)), max(1, round(lw * factor))), True)
    if factor > 1:
        y, x = int(rng.integers(0, nh - h + 1)), int(rng.integers(0, nw - w + 1))
        img = img[y:y + h, x:x + w]
        ry, rx = lab.shape[0] / nh, lab.shape[1] / nw  # the same window in the label's pixels
        lab = lab[round(y * ry):round(y * ry) + lh, round(x * rx):round(x * rx) + lw]
    return np.ascontiguousarray(img), np.ascontiguousarray(lab)


def apply(view: View, sample_id: str, image: np.ndarray, label: np.ndarray, seed: int):
    """(image, label) of `view` of one sample."""
    rng = _rng(seed, sample_id, view.name)
    if view.kind == "flip":
        return np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(label[:, ::-1])
    if view.kind == "scale":
        return _rescale_crop(image, label, view.factor, rng)
    factor = float(rng.uniform(*LSJ_RANGE))
    image, label = _rescale_crop(image, label, factor, rng)
    if rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


class ViewedSamples:
    """Store sample j of an extraction with views: image j % N in view j // N (0 = the original)."""

    def __init__(self, refs, views: list[View], seed: int):
        self.refs, self.views, self.seed = list(refs), views, seed
        self.n = len(self.refs)

    def __len__(self) -> int:
        return self.n * (1 + len(self.views))

    def __getitem__(self, j: int):
        return self.refs[j % self.n]

    def ids(self) -> list[str]:
        base = [r.id for r in self.refs]
        return base + [f"{i}@{v.name}" for v in self.views for i in base]

    def transform(self, j: int, image, label):
        v = j // self.n
        if v == 0:
            return image, label
        return apply(self.views[v - 1], self.refs[j % self.n].id, image, label, self.seed)

    def attrs(self, recipe: str) -> dict:
        return {"recipe": recipe, "names": ["original", *[v.name for v in self.views]], "num_images": self.n}
