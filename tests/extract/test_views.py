"""Augmented views extracted from the augmented images themselves, stored beside the originals, reproducible."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hairdiff.cache import FeatureStore
from hairdiff.cache.geometry import letterbox_image, letterbox_label
from hairdiff.core.errors import UsageError
from hairdiff.demo.hairlike import make_hairlike_dataset
from hairdiff.extract.config import ExtractConfig
from hairdiff.extract.loading import to_model_input
from hairdiff.extract.runner import build_extractor, list_refs
from hairdiff.extract.views import apply, parse_views
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
    assert [v.name for v in parse_views("lsj:3")] == ["lsj0", "lsj1", "lsj2"]
    assert parse_views(None) == [] and parse_views("") == []
    for bad in ("mirror", "scale:1", "scale:x", "flip+flip", "lsj:0"):
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
    # Views are part of what the store holds, not of what its features are.
    assert store.fingerprint != plain.fingerprint and store.features_fingerprint == plain.features_fingerprint
    cfg = ExtractConfig(dataset="folder", root=str(data), model="tiny", resolution=64, device="cpu")
    fx = build_extractor(cfg)
    reader, refs = list_refs(cfg)
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
    a = extract(data, tmp_path / "a", "--views", "scale:1.5+lsj:1", "--limit", "2")
    b = extract(data, tmp_path / "b", "--views", "scale:1.5+lsj:1", "--limit", "2")
    n = a.num_images
    want = {0, 1, n, n + 1, 2 * n, 2 * n + 1}
    assert set(np.flatnonzero(a.done_mask()).tolist()) == want
    for i in sorted(want):
        x, y = a.read_sample(i), b.read_sample(i)
        assert np.array_equal(x["mask"], y["mask"])
        assert all(np.array_equal(x["features"][k], y["features"][k]) for k in x["features"])
    # a scale-up view is a crop of the original size, and not the original
    assert a.read_sizes(n)[0] == a.read_sizes(0)[0] and not np.array_equal(a.read_sample(n)["mask"],
                                                                             a.read_sample(0)["mask"])


def test_scale_view_keeps_image_and_label_aligned():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
    label = np.zeros((20, 30), np.uint8)  # an annotation at half the image's resolution, like CelebAMask-HQ
    label[5:10, 10:20] = 1
    image[10:20, 20:40] = 255  # the labelled region, white in the image
    for view in parse_views("scale:0.5,1.75"):
        img, lab = apply(view, "x", image, label, seed=3)
        assert lab.shape[0] * 2 == img.shape[0] and lab.shape[1] * 2 == img.shape[1]
        up = np.kron(lab, np.ones((2, 2), np.uint8)).astype(bool)
        assert img[up].mean() > 200 and img[~up].mean() < 160  # hair pixels stayed on the white region
