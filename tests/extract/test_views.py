"""Augmented views extracted from the augmented images themselves, stored beside the originals, reproducible;
a zoomed-out view is smaller in what the backbone receives; the draws follow ODISE's and Mask2Former's."""
from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from PIL import Image

from hairdiff.cache import FeatureStore, fingerprint
from hairdiff.cache.geometry import letterbox_image, letterbox_label
from hairdiff.core.errors import UsageError
from hairdiff.core.labels import IGNORE
from hairdiff.demo.hairlike import make_hairlike_dataset
from hairdiff.extract.config import ExtractConfig
from hairdiff.extract.loading import to_model_input
from hairdiff.extract.runner import build_extractor, list_refs, sample_loader, viewed
from hairdiff.extract.views import RULE, Draw, apply, draw, parse_views, render
from tests.fixtures.cli import run_pipeline


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_hairlike_dataset(tmp_path_factory.mktemp("v") / "d", n=5, size=64, seed=11)


def extract(data, cache, *extra) -> FeatureStore:
    p = run_pipeline("extract", "--dataset", "folder", "--root", data, "--model", "tiny", "--resolution", "64",
                     "--batch-size", "1", "--workers", "0", "--shard-size", "4", *extra, cache_root=cache)
    return FeatureStore.open(p.stdout.split()[-1])


def test_grammar():
    assert [v.name for v in parse_views("flip+scale:0.75,1.25")] == ["flip", "scale0.75", "scale1.25"]
    assert [v.name for v in parse_views("lsj:3+color:2")] == ["lsj0", "lsj1", "lsj2", "color0", "color1"]
    assert parse_views(None) == () and parse_views("") == ()
    for bad in ("mirror", "scale:1", "scale:x", "scale:0.05", "flip+flip", "lsj:0", "color:0", "color:65", "color"):
        with pytest.raises(UsageError, match="--views"):
            parse_views(bad)
    with pytest.raises(UsageError, match="--views"):
        ExtractConfig(dataset="folder", root=".", views="rotate")


def test_flipped_view_is_the_backbone_on_the_flipped_image(data, tmp_path):
    plain = extract(data, tmp_path / "a")
    store = extract(data, tmp_path / "b", "--views", "flip")
    n = plain.num_samples
    assert store.num_samples == 2 * n and store.num_images == n
    assert store.ids[n:] == [f"{i}@flip" for i in plain.ids]
    assert store.views["names"] == ["original", "flip"] and store.done_mask().all()
    assert list(store.layout.views_of(3)) == [3, n + 3] and store.layout.view_name(n + 3) == "flip"
    # Views are part of what the store holds, not of what its features are; the views rule is in it, so stores
    # of older view rules are never read as holding these views. A store without views keeps the fingerprint
    # of its features alone (as every store had before views existed).
    assert store.fingerprint != plain.fingerprint and store.features_fingerprint == plain.features_fingerprint
    assert store.fingerprint_inputs["views"]["rule"] == RULE == "views-v3"
    assert "views" not in plain.fingerprint_inputs and plain.fingerprint == fingerprint(plain.fingerprint_inputs)
    cfg = ExtractConfig(dataset="folder", root=str(data), model="tiny", resolution=64, device="cpu")
    fx = build_extractor(cfg)
    reader, refs = list_refs(cfg)
    assert plain.fingerprint == fingerprint(fx.fingerprint_inputs)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the CLI ran (CPU results depend on the thread count at float rounding)
    try:
        for i in (0, 3):
            s = reader.load(refs[i])
            img, lab = s.image[:, ::-1], s.label[:, ::-1]
            want = fx(to_model_input([letterbox_image(np.ascontiguousarray(img), 64)], torch.device("cpu"),
                                     torch.float32))
            got = store.read_sample(n + i)
            for name, f in want.items():
                assert np.array_equal(got["features"][name], f[0].to(torch.float16).numpy()), name
            assert np.array_equal(got["mask"], letterbox_label(np.ascontiguousarray(lab), 64))
            assert np.array_equal(store.read_label(n + i), lab)
            # the original view is the plain extraction's sample
            assert np.array_equal(store.read_sample(i)["features"][name], plain.read_sample(i)["features"][name])
    finally:
        torch.set_num_threads(threads)


def test_random_views_are_reproducible_and_limit_counts_images(data, tmp_path):
    a = extract(data, tmp_path / "a", "--views", "scale:1.5+lsj:1+color:1", "--limit", "2")
    b = extract(data, tmp_path / "b", "--views", "scale:1.5+lsj:1+color:1", "--limit", "2")
    n = a.num_images
    want = {0, 1, n, n + 1, 2 * n, 2 * n + 1, 3 * n, 3 * n + 1}
    assert set(np.flatnonzero(a.done_mask()).tolist()) == want
    for i in sorted(want):
        x, y = a.read_sample(i), b.read_sample(i)
        assert np.array_equal(x["mask"], y["mask"])
        assert all(np.array_equal(x["features"][k], y["features"][k]) for k in x["features"])
    # every view keeps the original's frame; a scale-up view is a crop of it, not the original
    assert all(a.read_sizes(i)[0] == a.read_sizes(i % n)[0] for i in want)
    assert not np.array_equal(a.read_sample(n)["mask"], a.read_sample(0)["mask"])


# ------------------------------------------------------------------ what the backbone receives
H, W, R = 96, 128, 64  # a landscape image letterboxed at 64: factor 1/2, rows 48..63 are padding
HAIR = (slice(16, 64), slice(32, 96))  # the hair: a bright rectangle whose edges land on whole pixels below
HAIR_VALUE, GROUND = 200, 60


@pytest.fixture(scope="module")
def rectangle(tmp_path_factory):
    root = tmp_path_factory.mktemp("rect")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    image = np.full((H, W, 3), GROUND, np.uint8)
    image[HAIR] = HAIR_VALUE
    mask = np.zeros((H, W), np.uint8)
    mask[HAIR] = 255
    Image.fromarray(image).save(root / "images" / "a.png")
    Image.fromarray(mask).save(root / "masks" / "a.png")
    return root


def backbone_inputs(root, views: str):
    """What extraction hands the backbone for every sample of image `a` (its letterboxed model input, from
    extraction's own loader) and what the store gets as its mask."""
    cfg = ExtractConfig(dataset="folder", root=str(root), model="tiny", resolution=R, views=views, device="cpu",
                        workers=0)
    reader, refs = list_refs(cfg)
    samples = viewed(cfg, refs)
    batch = next(iter(sample_loader(cfg, reader, samples, np.arange(len(samples)), len(samples))))
    x = to_model_input(batch.images, torch.device("cpu"), torch.float32, channels_last=False)
    return x.numpy(), np.stack([d.mask for d in batch.items])


def frame_box(scale: float) -> np.ndarray:
    """Independent reference: the hair's pixels in the R x R frame, from the geometry alone (scale the
    rectangle's edges by the view's factor, then by the letterbox's R / max(H, W))."""
    k = scale * R / max(H, W)
    out = np.zeros((R, R), bool)
    out[round(HAIR[0].start * k):round(HAIR[0].stop * k), round(HAIR[1].start * k):round(HAIR[1].stop * k)] = True
    return out


def seen_as_hair(x: np.ndarray) -> np.ndarray:
    """Pixels of a model input (normalised x / 127.5 - 1) brighter than halfway between ground and hair."""
    return x[0] > (HAIR_VALUE + GROUND) / 2 / 127.5 - 1


def test_zoom_out_view_is_smaller_in_what_the_backbone_receives(rectangle):
    x, masks = backbone_inputs(rectangle, "scale:0.5")
    original, view = seen_as_hair(x[0]), seen_as_hair(x[1])
    # The hair's area in the frame is a quarter of the original's, within a pixel's rounding of its edges.
    rows, cols = frame_box(0.5).any(1).sum(), frame_box(0.5).any(0).sum()
    assert abs(view.sum() - original.sum() / 4) <= rows + cols, (view.sum(), original.sum())
    # ... exactly where the geometry puts it, in the image and in the mask alike.
    for got, scale in ((original, 1.0), (view, 0.5)):
        assert np.array_equal(got, frame_box(scale))
    for j, scale in ((0, 1.0), (1, 0.5)):
        assert np.array_equal(masks[j] == 1, frame_box(scale))
        assert np.array_equal(seen_as_hair(x[j]), masks[j] == 1)  # image and label aligned, to the pixel
    # A one-pixel shift of image against label is caught by the comparison above.
    assert not np.array_equal(np.roll(masks[1] == 1, 1, axis=0), view)
    assert not np.array_equal(np.roll(masks[1] == 1, 1, axis=1), view)
    # Outside the zoomed-out picture (its top-left quarter of the letterboxed frame): the canvas, which the
    # backbone sees as the letterbox's own padding (-1) and the label ignores.
    content = np.zeros((R, R), bool)
    content[:round(H * R / W / 2), :R // 2] = True
    assert (masks[1][~content] == IGNORE).all() and (masks[1][content] != IGNORE).all()
    far = np.ones((R, R), bool)
    far[:round(H * R / W / 2) + 2, :R // 2 + 2] = False  # beyond the resampling filter's reach
    assert np.allclose(x[1][:, far], -1.0)


def test_zoom_in_view_is_larger_in_what_the_backbone_receives(rectangle):
    x, masks = backbone_inputs(rectangle, "scale:2")
    d = draw(parse_views("scale:2")[0], "a", 0)
    # Independent reference: the rectangle at twice its size (symmetric left-right, so a mirror keeps it) seen
    # through an H x W window at the drawn place, then letterboxed by R / max(H, W).
    y0, x0 = min(int(d.crop_at[0] * (H + 1)), H), min(int(d.crop_at[1] * (W + 1)), W)
    rows = np.clip(np.array([2 * HAIR[0].start, 2 * HAIR[0].stop]) - y0, 0, H) * R // max(H, W)
    cols = np.clip(np.array([2 * HAIR[1].start, 2 * HAIR[1].stop]) - x0, 0, W) * R // max(H, W)
    want = np.zeros((R, R), bool)
    want[rows[0]:rows[1], cols[0]:cols[1]] = True
    seen, labelled = seen_as_hair(x[1]), masks[1] == 1
    perimeter = (rows[1] - rows[0]) + (cols[1] - cols[0])
    assert want.sum() > 0 and (seen ^ want).sum() <= perimeter and (labelled ^ want).sum() <= perimeter
    assert (seen ^ labelled).sum() <= perimeter // 2  # aligned up to the half-pixel rounding of the window


def test_scale_view_keeps_image_and_label_aligned():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
    label = np.zeros((20, 30), np.uint8)  # an annotation at half the image's resolution, like CelebAMask-HQ
    label[5:10, 10:20] = 1
    image[10:20, 20:40] = 255  # the labelled region, white in the image
    for view in parse_views("scale:0.5,1.75+lsj:6"):
        for sid in ("x", "y"):
            img, lab = apply(view, sid, image, label, seed=3)
            assert img.shape == image.shape and lab.shape == label.shape  # the original's frame
            up = np.kron(lab, np.ones((2, 2), np.uint8))
            if (up == 1).sum() >= 8:  # a zoom-in may crop the hair out of the frame
                assert img[up == 1].mean() > 200 and img[up == 0].mean() < 160  # hair stayed on the white region
            f = draw(view, sid, 3).factor
            if f < 1:  # the canvas beyond the smaller picture: the letterbox's padding value, label ignore
                nh, nw, lh, lw = round(40 * f), round(60 * f), round(20 * f), round(30 * f)
                assert (img[nh:] == 0).all() and (img[:, nw:] == 0).all() and img[:nh, :nw].mean() > 50
                assert (lab[lh:] == IGNORE).all() and (lab[:, lw:] == IGNORE).all() and (lab[:lh, :lw] < 2).all()


# ------------------------------------------------------------------ the draws
def test_scale_and_lsj_draws_follow_odise():
    ids = [f"img{i}" for i in range(600)]
    lsj, scale, flip = parse_views("lsj:1+scale:0.5+flip")
    lsj_draws = [draw(lsj, i, 0) for i in ids]
    f = np.array([d.factor for d in lsj_draws])
    assert 0.1 <= f.min() and f.max() <= 2.0  # ODISE's ResizeScale(0.1, 2.0)
    assert np.allclose(np.quantile(f, [0.25, 0.5, 0.75]), [0.575, 1.05, 1.525], atol=0.12)  # uniform
    for views in (lsj_draws, [draw(scale, i, 0) for i in ids]):
        assert abs(np.mean([d.mirror for d in views]) - 0.5) < 0.07  # mirrored with probability 1/2
        assert abs(np.mean([d.crop_at[0] for d in views]) - 0.5) < 0.07
    assert all(draw(flip, i, 0) == Draw(mirror=True) for i in ids[:5])
    assert draw(lsj, "a", 0) == draw(lsj, "a", 0) and draw(lsj, "a", 0) != draw(lsj, "a", 1)
    # A mirrored draw renders as the mirror image of the unmirrored one.
    rng = np.random.default_rng(1)
    image, label = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), rng.integers(0, 2, (30, 40), dtype=np.uint8)
    a = render(Draw(mirror=False, factor=0.5), image, label)
    b = render(Draw(mirror=True, factor=0.5), image[:, ::-1], label[:, ::-1])
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_color_draws_follow_mask2formers_color_aug_ssd():
    views = parse_views("color:1")
    ops = [draw(views[0], f"img{i}", 0).color for i in range(800)]
    for name, lo, hi in (("brightness", -32, 32), ("contrast", 0.5, 1.5), ("saturation", 0.5, 1.5), ("hue", -18, 18)):
        values = [v for o in ops for k, v in o if k == name]
        assert abs(len(values) / len(ops) - 0.5) < 0.07, name  # each step with probability 1/2
        assert lo <= min(values) and max(values) <= hi and (max(values) - min(values)) > 0.8 * (hi - lo), name
    # brightness first; contrast either before saturation and hue or after both
    for o in ops:
        names = [k for k, _ in o]
        assert "brightness" not in names[1:]
        rest = [k for k in names if k != "brightness"]
        if "contrast" in rest and len(rest) > 1:
            assert rest.index("contrast") in (0, len(rest) - 1)
    assert abs(np.mean([len(o) == 0 for o in ops]) - 1 / 16) < 0.03


def test_color_steps_match_their_definitions():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    label = rng.integers(0, 2, (8, 8), dtype=np.uint8)
    img, lab = render(Draw(color=(("brightness", 20.7),)), image, label)
    assert np.array_equal(img, np.clip(image.astype(np.float32) + np.float32(20.7), 0, 255).astype(np.uint8))
    assert np.array_equal(lab, label)  # photometric: the label and the geometry are untouched
    img, _ = render(Draw(color=(("contrast", 1.3),)), image, label)
    assert np.array_equal(img, np.clip(image.astype(np.float32) * np.float32(1.3), 0, 255).astype(np.uint8))
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    for op, value, want in (("hue", 18, colorsys.hsv_to_rgb(36 / 360, 1, 1)),  # 18 OpenCV steps = 36 degrees
                            ("saturation", 0.5, colorsys.hsv_to_rgb(0, 0.5, 1))):
        img, _ = render(Draw(color=((op, value),)), red, np.zeros((4, 4), np.uint8))
        assert np.abs(img[0, 0].astype(float) - np.array(want) * 255).max() <= 3, (op, img[0, 0])


def test_cache_views_pictures_what_the_store_holds(data, tmp_path):
    """`pipeline cache views`: the user's way to see a store's views. The shares come from the stored labels:
    scale:0.5 covers a quarter of the original's hair; the re-rendered view agrees with the stored label."""
    import json

    store = extract(data, tmp_path / "c", "--views", "flip+scale:0.5", "--limit", "2")
    p = run_pipeline("cache", "views", store.url, "--out", tmp_path / "pics", "--images", "2")
    report = json.loads((tmp_path / "pics" / "views.json").read_text())
    assert report["images"] == 2 and report["views"] == ["original", "flip", "scale0.5"]
    for row in report["samples"]:
        label = store.read_label(store.ids.index(row["id"]))
        assert row["hair_fraction"] == pytest.approx((label == 1).mean())
        assert row["rerendered_label_matches"] is True
        want = {"original": 1.0, "flip": 1.0, "scale0.5": 0.25}[row["view"]]
        assert row["ratio_to_original"] == pytest.approx(want, abs=0.03), row
    pictures = [Image.open(f) for f in report["pictures"]]
    assert len(pictures) == 2 and all(pic.width >= 3 * 256 for pic in pictures)  # three panels side by side
    assert "0.25x the original's" in p.stdout
