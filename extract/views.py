"""Augmented views, extracted and cached like images: `pipeline extract --views RECIPE`.

Caching features once must not mean training on one fixed view. Each view is computed from the augmented
image itself (mirrored, rescaled, cropped or padded, recoloured before the letterbox, then the backbone),
never by transforming cached features, and its label is transformed alike (nearest neighbour).

The frame. A view keeps the original image's size (H, W), which the letterbox (cache/geometry.py) then maps
to the store's R x R as it maps the original. A view smaller than the frame is placed at the frame's top-left
on a canvas (image IMAGE_PAD = 0, label 255 = ignore); a larger one is cropped to the frame at a seeded
random place. Without the canvas the letterbox would scale a zoomed-out image back up to fill R: the backbone
would see the same object, only blurrier (issue 17 measured the hair's share of the frame unchanged). The
canvas value is the letterbox's own image padding, so a zoomed-out view is exactly what the letterbox makes
of a smaller picture and the backbone sees one padding value in every sample, training and test. (Mask2Former
pads with the mean colour instead, 128 in its mapper and 0 after its normalisation; our letterbox chose 0 in
`letterbox-tl-v1`, and the canvas follows it.) Top-left, as Mask2Former's semantic mapper and detectron2's
FixedSizeCrop pad: on the right and the bottom.

Grammar: terms joined by '+', each adding views to the original one:
  flip                 the horizontal mirror image
  scale:S1,S2,...      one view per factor S in 0.1..4: the image resized by S in its frame (S < 1: smaller,
                       padded; S > 1: cropped at a random place), mirrored with probability 1/2
  lsj:K                K views of large-scale jitter as NVlabs/ODISE trains its head
                       (configs/common/data/coco_panoptic_semseg.py: RandomFlip, ResizeScale(min_scale=0.1,
                       max_scale=2.0) of the 1024 target, FixedSizeCrop(1024), detectron2's defaults): mirrored
                       with probability 1/2, resized bilinearly (ResizeScale's interpolation; labels nearest) by a
                       factor drawn uniformly from [0.1, 2.0] of the frame, then cropped to the frame at
                       round(u x slack) on both axes with ONE fraction u (FixedSizeCrop's offset: its windows
                       slide on the diagonal), or placed on the canvas at the top-left (FixedSizeCrop pads the
                       right and the bottom; label 255 there, as its seg_pad_value). Our target is the original's
                       own frame, not a square: the letterbox adds the square's padding afterwards, as for every
                       image. One difference, ours: the canvas is 0 (the letterbox's padding, -1 at the
                       backbone's input) where FixedSizeCrop pads 128 (about 0 after SD's normalisation). Our
                       letterbox pads every image, training and test, with 0; a 128 canvas inside a 0 letterbox
                       would show the backbone two paddings, one of which no test image has (ODISE's test images
                       are padded with its one value too). Changing the letterbox's value is a new preprocessing
                       rule for every store, not a views matter.
  color:K              K photometric views as Mask2Former's ADE20K semantic recipe draws them (INPUT.COLOR_AUG_SSD:
                       ColorAugSSDTransform, detectron2's projects/PointRend/point_rend/color_augmentation.py, with
                       its defaults): brightness with probability 1/2, an offset drawn from U(-32, 32) on 0..255;
                       then, in one of two orders chosen with probability 1/2 (contrast, saturation, hue, or
                       saturation, hue, contrast), each with probability 1/2: contrast x U(0.5, 1.5), HSV
                       saturation x U(0.5, 1.5), hue rotated by an integer from -18..18 of OpenCV's 2-degree
                       steps (up to 36 degrees). Values are clipped to 0..255 and truncated to integers after each
                       step, as there. 1/16 of the draws change nothing, as there. Geometry and label unchanged;
                       not mirrored (`flip` is a view of its own, so `flip+color:K` measures colour alone). HSV
                       goes through PIL (256 hue steps per turn, the shift rounded to them) instead of OpenCV.
e.g. `flip`, `flip+scale:0.5,0.75,1.25,1.5`, `lsj:4`, `flip+color:2`. Randomness comes from (--seed, the
sample's id, the view): the same command extracts the same views. The old `lsj` (views-v1: factor 0.5-2 with
no canvas, so about a third of its draws were only a flip or a blur) is not kept: with the canvas it would be
this `lsj` with a narrower range; nor is views-v2's (bicubic, a fraction per axis).

Layout in the store (cache/layout.py owns it): view-major, samples 0..N-1 are the original images, then
every image's first view, and so on; a view's id is `<id>@<view>`, e.g. `Frame00001@flip`.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image

from hairdiff.cache.geometry import IMAGE_PAD
from hairdiff.cache.layout import ViewLayout
from hairdiff.core.errors import UsageError
from hairdiff.core.labels import IGNORE

# views-v2: views smaller than the frame are padded into it (v1 let the letterbox undo the zoom-out), lsj is
# ODISE's, scale and lsj views are mirrored with probability 1/2, color views. views-v3: lsj resizes bilinearly
# and places its window with one fraction for both axes, as detectron2's ResizeScale and FixedSizeCrop. Part of
# every views store's fingerprint, so no store of an older rule is read as holding these.
RULE = "views-v3"
MIRROR_P = 0.5
LSJ_RANGE = (0.1, 2.0)  # ODISE: ResizeScale(min_scale=0.1, max_scale=2.0)
SCALE_RANGE = (0.1, 4.0)
# ColorAugSSDTransform's defaults (Mask2Former builds it with them).
BRIGHTNESS_DELTA = 32.0
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_DELTA = 18  # OpenCV hue units: 180 per turn
MAX_RANDOM_VIEWS = 64


@dataclass(frozen=True)
class View:
    name: str  # "flip", "scale0.75", "lsj2", "color0"
    kind: str  # "flip" | "scale" | "lsj" | "color"
    factor: float = 1.0


@dataclass(frozen=True)
class Draw:
    """What one view does to one sample, drawn once from its seed; `render` follows it exactly."""

    mirror: bool = False
    factor: float = 1.0
    crop_at: tuple[float, float] = (0.0, 0.0)  # where a crop window sits: fraction of the slack (rows, columns)
    color: tuple = field(default=())  # ((operation, value), ...) in the order they apply
    # ODISE's lsj (detectron2's ResizeScale + FixedSizeCrop): bilinear, the window at round(fraction x slack);
    # otherwise (scale) bicubic, the window at any whole position with equal probability (Mask2Former's crop).
    detectron2: bool = False


def _term_error(recipe, message: str) -> UsageError:
    return UsageError(f"--views {recipe!r}: {message}")


def _count(recipe, term: str, kind: str, text: str) -> int:
    k = int(text)
    if not 1 <= k <= MAX_RANDOM_VIEWS:
        raise _term_error(recipe, f"{kind} takes 1..{MAX_RANDOM_VIEWS} views, got {term!r}")
    return k


@lru_cache(maxsize=64)
def parse_views(recipe: str | None) -> tuple[View, ...]:
    """The extra views a recipe names (the original view is always there and not listed). Parsed once per
    recipe text in a process: the config's validation and the extraction share the result."""
    if not recipe:
        return ()
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
                if not SCALE_RANGE[0] <= f <= SCALE_RANGE[1] or f == 1.0:
                    raise _term_error(recipe, f"scale factor {s.strip()!r} must be in "
                                              f"{SCALE_RANGE[0]:g}..{SCALE_RANGE[1]:g} and not 1")
                views.append(View(f"scale{f:g}", "scale", f))
        elif m := re.fullmatch(r"(lsj|color):(\d+)", term):
            kind = m.group(1)
            views += [View(f"{kind}{j}", kind) for j in range(_count(recipe, term, kind, m.group(2)))]
        else:
            raise _term_error(recipe, f"unknown term {term!r}; use flip, scale:S1,S2,..., lsj:K or color:K "
                                      f"joined by '+', e.g. flip+scale:0.5,0.75,1.25,1.5")
    names = [v.name for v in views]
    if len(set(names)) != len(names):
        raise _term_error(recipe, "names a view twice")
    return tuple(views)


def _number(f: float) -> str:
    short = f"{f:g}"
    return short if float(short) == f else repr(f)


def canonical_views(recipe: str | None) -> str | None:
    """The one spelling of a recipe (None for no views): `scale:.5` and ` scale:0.50 ` are `scale:0.5`, terms
    of one kind in a row are one term, the order (which sets the store's sample order) is kept. UsageError for a
    recipe parse_views refuses."""
    terms: list[tuple[str, list]] = []
    for v in parse_views(recipe):
        if terms and terms[-1][0] == v.kind and v.kind != "flip":
            terms[-1][1].append(v)
        else:
            terms.append((v.kind, [v]))
    out = []
    for kind, vs in terms:
        if kind == "flip":
            out.append("flip")
        elif kind == "scale":
            out.append("scale:" + ",".join(_number(v.factor) for v in vs))
        else:
            out.append(f"{kind}:{len(vs)}")
    return "+".join(out) or None


def record(views, seed: int) -> dict | None:
    """What the views add to a store's fingerprint (None without views: fingerprints stay as they were)."""
    if not views:
        return None
    return {"rule": RULE, "recipe": [v.name for v in views], "seed": seed,
            "frame": "the original's size; smaller views top-left on a canvas (image pad %d, label pad %d)"
                     % (IMAGE_PAD, IGNORE),
            "mirror_p": MIRROR_P, "lsj_range": list(LSJ_RANGE),
            "color": {"brightness_delta": BRIGHTNESS_DELTA, "contrast": list(CONTRAST_RANGE),
                      "saturation": list(SATURATION_RANGE), "hue_delta_opencv": HUE_DELTA, "hsv": "PIL"},
            "resample": "image bicubic (lsj: bilinear), label nearest; draws seeded by (seed, id, view)",
            "lsj_window": "round(u x slack), one u for both axes (detectron2 FixedSizeCrop)"}


# ---------------------------------------------------------------------------------------------- drawing
def _rng(seed: int, sample_id: str, view: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}\0{sample_id}\0{view}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _color_ops(rng: np.random.Generator) -> tuple:
    ops = []
    if rng.random() < 0.5:
        ops.append(("brightness", float(rng.uniform(-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA))))
    order = ("contrast", "saturation", "hue") if rng.random() < 0.5 else ("saturation", "hue", "contrast")
    for op in order:
        if rng.random() < 0.5:
            if op == "hue":
                ops.append((op, int(rng.integers(-HUE_DELTA, HUE_DELTA + 1))))
            else:
                lo, hi = CONTRAST_RANGE if op == "contrast" else SATURATION_RANGE
                ops.append((op, float(rng.uniform(lo, hi))))
    return tuple(ops)


def draw(view: View, sample_id: str, seed: int) -> Draw:
    """The random choices of `view` for one sample, from (seed, id, view) alone."""
    rng = _rng(seed, sample_id, view.name)
    if view.kind == "flip":
        return Draw(mirror=True)
    if view.kind == "color":
        return Draw(color=_color_ops(rng))
    mirror = bool(rng.random() < MIRROR_P)
    if view.kind == "scale":
        return Draw(mirror=mirror, factor=view.factor, crop_at=(float(rng.random()), float(rng.random())))
    factor, u = float(rng.uniform(*LSJ_RANGE)), float(rng.random())  # ResizeScale's factor, FixedSizeCrop's offset
    return Draw(mirror=mirror, factor=factor, crop_at=(u, u), detectron2=True)


# -------------------------------------------------------------------------------------------- rendering
def _resize(a: np.ndarray, size: tuple[int, int], resample) -> np.ndarray:
    h, w = size
    if a.shape[:2] == (h, w):
        return a
    return np.asarray(Image.fromarray(a).resize((w, h), resample))


def _start(slack: int, fraction: float, detectron2: bool = False) -> int:
    """First row (or column) of a crop window with `slack` pixels to spare (0 when there is none): any whole
    position with equal probability (Mask2Former's RandomCrop: randint(slack + 1)), or detectron2's
    FixedSizeCrop, round(fraction x slack)."""
    if slack <= 0:
        return 0
    return int(np.round(fraction * slack)) if detectron2 else min(int(fraction * (slack + 1)), slack)


def _on_canvas(a: np.ndarray, size: tuple[int, int], fill: int) -> np.ndarray:
    """`a` at the top-left of a canvas of `size` filled with `fill` (no copy when it fills the frame)."""
    if a.shape[:2] == tuple(size):
        return a
    out = np.full((*size, *a.shape[2:]), fill, dtype=a.dtype)
    out[:a.shape[0], :a.shape[1]] = a
    return out


def _zoom(image: np.ndarray, label: np.ndarray, d: Draw) -> tuple[np.ndarray, np.ndarray]:
    h, w = image.shape[:2]
    nh, nw = max(1, round(h * d.factor)), max(1, round(w * d.factor))
    # The label may be stored at another resolution (CelebAMask-HQ: half the image's): scale it alike.
    lh, lw = label.shape[:2]
    img = _resize(image, (nh, nw), Image.BILINEAR if d.detectron2 else Image.BICUBIC)
    lab = _resize(label, (max(1, round(lh * d.factor)), max(1, round(lw * d.factor))), Image.NEAREST)
    y, x = _start(nh - h, d.crop_at[0], d.detectron2), _start(nw - w, d.crop_at[1], d.detectron2)
    img = img[y:y + h, x:x + w]
    ly, lx = round(y * lab.shape[0] / nh), round(x * lab.shape[1] / nw)  # the same window in the label's pixels
    lab = lab[ly:ly + lh, lx:lx + lw]
    return _on_canvas(img, (h, w), IMAGE_PAD), _on_canvas(lab, (lh, lw), IGNORE)


def _affine(a: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """a * alpha + beta, clipped to 0..255 and truncated to uint8 (ColorAugSSDTransform's `convert`)."""
    return np.clip(a.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def _hsv_step(image: np.ndarray, op: str, value) -> np.ndarray:
    hsv = np.array(Image.fromarray(image).convert("HSV"))
    if op == "saturation":
        hsv[..., 1] = _affine(hsv[..., 1], alpha=value)
    else:  # hue: OpenCV's 180 steps per turn -> PIL's 256
        hsv[..., 0] = (hsv[..., 0].astype(np.int64) + round(value * 256 / 180)) % 256
    return np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"))


def recolour(image: np.ndarray, ops) -> np.ndarray:
    for op, value in ops:
        if op == "brightness":
            image = _affine(image, beta=value)
        elif op == "contrast":
            image = _affine(image, alpha=value)
        else:
            image = _hsv_step(image, op, value)
    return image


def render(d: Draw, image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image, label) after the drawn view: mirror, then zoom into the frame (crop or canvas), then colour."""
    if d.mirror:
        image, label = image[:, ::-1], label[:, ::-1]
    if d.factor != 1.0:
        image, label = _zoom(np.ascontiguousarray(image), np.ascontiguousarray(label), d)
    if d.color:
        image = recolour(np.ascontiguousarray(image), d.color)
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def apply(view: View, sample_id: str, image: np.ndarray, label: np.ndarray, seed: int):
    """(image, label) of `view` of one sample, in the original's frame (letterboxed afterwards)."""
    return render(draw(view, sample_id, seed), image, label)


class ViewedSamples:
    """An extraction's samples: every image in the original view, then in each extra view (`layout` says
    which image and view sample j is). Without views, the images themselves."""

    def __init__(self, refs, views, seed: int, recipe: str | None):
        self.refs, self.views, self.seed = list(refs), tuple(views), seed
        self.layout = ViewLayout.with_views(len(self.refs), [v.name for v in self.views], recipe)

    def __len__(self) -> int:
        return self.layout.num_samples

    def __getitem__(self, j: int):
        return self.refs[self.layout.image_of(j)]

    def ids(self) -> list[str]:
        return self.layout.ids(r.id for r in self.refs)

    def transform(self, j: int, image, label):
        v = self.layout.view_of(j)
        if v == 0:
            return image, label
        return apply(self.views[v - 1], self.refs[self.layout.image_of(j)].id, image, label, self.seed)

    def record(self) -> dict | None:
        """What these views add to the store's fingerprint (None without views)."""
        return record(self.views, self.seed)
