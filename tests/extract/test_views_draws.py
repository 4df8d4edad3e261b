"""The order of the colour jitter's steps (Mask2Former's ColorAugSSDTransform) and ODISE's lsj (detectron2's
ResizeScale + FixedSizeCrop) as the rendered view holds them: what the letterbox and the backbone receive."""
from __future__ import annotations

import numpy as np
from PIL import Image

from hairdiff.core.labels import IGNORE
from hairdiff.extract.views import RULE, Draw, draw, parse_views, render

IDS = [f"img{i}" for i in range(800)]


def picture(h: int = 24, w: int = 36, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    label = rng.integers(0, 2, (h, w), dtype=np.uint8)
    return image, label


# ------------------------------------------------------------------------------------------- colour order
def test_both_orders_of_color_aug_ssd_are_drawn_half_the_time():
    """ColorAugSSDTransform: brightness, then with probability 1/2 (contrast, saturation, hue), else
    (saturation, hue, contrast); each step itself with probability 1/2."""
    color = parse_views("color:1")[0]
    first = []
    for ops in (draw(color, i, 0).color for i in IDS):
        names = [k for k, _ in ops if k != "brightness"]
        if "saturation" in names and "hue" in names:
            assert names.index("saturation") < names.index("hue"), ops
        if "contrast" in names and len(names) > 1:
            first.append(names[0] == "contrast")
    assert len(first) > 250
    assert abs(np.mean(first) - 0.5) < 0.07, np.mean(first)  # both orders, each half the time


def test_a_view_applies_its_steps_in_the_drawn_order():
    """The rendered view is the steps applied one after another in the drawn order, and the order shows in the
    image (the steps clip and truncate, so they do not commute)."""
    image, label = picture()
    color = parse_views("color:1")[0]
    ops = next(o for o in (draw(color, i, 0).color for i in IDS)
               if [k for k, _ in o][:1] == ["brightness"] and len(o) == 4)
    step_by_step = image
    for op in ops:
        step_by_step = render(Draw(color=(op,)), step_by_step, label)[0]
    assert np.array_equal(render(Draw(color=ops), image, label)[0], step_by_step)
    a = render(Draw(color=(("contrast", 1.45), ("saturation", 0.55))), image, label)[0]
    b = render(Draw(color=(("saturation", 0.55), ("contrast", 1.45))), image, label)[0]
    assert not np.array_equal(a, b)


# -------------------------------------------------------------------------------------------- ODISE's lsj
def test_lsj_draws_one_offset_fraction_for_both_axes():
    lsj = parse_views("lsj:1")[0]
    draws = [draw(lsj, i, 0) for i in IDS[:200]]
    assert all(d.crop_at[0] == d.crop_at[1] and d.detectron2 for d in draws)
    assert np.std([d.crop_at[0] for d in draws]) > 0.2  # a fraction drawn per sample, not fixed
    assert RULE == "views-v3"  # stores of the older lsj are never read as these


def detectron2_lsj(image: np.ndarray, label: np.ndarray, factor: float, u: float):
    """ResizeScale (PIL bilinear; labels nearest) then FixedSizeCrop to the frame: the window at
    round(u x slack) on both axes, or the picture at the top-left of the canvas (image 0: ours, label 255)."""
    h, w = label.shape
    nh, nw = round(h * factor), round(w * factor)
    img = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
    lab = np.asarray(Image.fromarray(label).resize((nw, nh), Image.NEAREST))
    y, x = int(np.round(u * max(nh - h, 0))), int(np.round(u * max(nw - w, 0)))
    img, lab = img[y:y + h, x:x + w], lab[y:y + h, x:x + w]
    out_img, out_lab = np.zeros_like(image), np.full_like(label, IGNORE)
    out_img[:img.shape[0], :img.shape[1]], out_lab[:lab.shape[0], :lab.shape[1]] = img, lab
    return out_img, out_lab


def test_lsj_views_are_detectron2s_resize_and_crop():
    image, label = picture()
    lsj = parse_views("lsj:1")[0]
    seen = set()
    for i in IDS[:60]:
        d = draw(lsj, i, 0)
        src_img, src_lab = (image[:, ::-1], label[:, ::-1]) if d.mirror else (image, label)
        want = detectron2_lsj(np.ascontiguousarray(src_img), np.ascontiguousarray(src_lab), d.factor, d.crop_at[0])
        got = render(d, image, label)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]), (i, d)
        seen.add((d.factor > 1, d.mirror))
    assert seen == {(True, True), (True, False), (False, True), (False, False)}  # crops and canvases, both ways
