"""`pipeline cache views` draws a photo only where it is what the store was computed from: an edited source
photo or mask, a store written under another view rule, or an unreachable dataset is said on stderr and in
views.json, the panel shows the stored label alone, and the exit status is 1. Real tiny-model stores: one
extracted once for the tests that edit its dataset (each puts the files back), one of an older rule."""
from __future__ import annotations

import json
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

from hairdiff.cache import FeatureStore
from hairdiff.demo.hairlike import make_hairlike_dataset
from hairdiff.extract import views as view_rules
from hairdiff.extract.config import ExtractConfig
from hairdiff.extract.runner import ExtractStats, run_local
from tests.fixtures.cli import invoke


def extract(root, cache, views="flip+scale:0.5") -> FeatureStore:
    cfg = ExtractConfig(dataset="folder", root=str(root), model="tiny", resolution=64, batch_size=2, workers=0,
                        shard_size=4, views=views, cache_root=str(cache), device="cpu", limit=2)
    stats = ExtractStats()
    run_local(cfg, stats, log=lambda m: None)
    return FeatureStore.open(stats.store)


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    base = tmp_path_factory.mktemp("vs")
    data = make_hairlike_dataset(base / "d", n=3, size=64, seed=5)
    return data, extract(data, base / "c")


@contextmanager
def edited(path, change):
    """`path` changed by change(bytes) -> bytes for the block, then put back as it was."""
    kept = path.read_bytes()
    try:
        path.write_bytes(change(kept))
        yield
    finally:
        path.write_bytes(kept)


def png(array) -> bytes:
    import io

    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def views(store, out):
    code, stdout, err = invoke("cache", "views", store.url, "--out", out, "--images", "2")
    return code, stdout, err, json.loads((out / "views.json").read_text())


def test_a_store_as_it_is_is_drawn_whole_with_exit_0(extracted, tmp_path):
    _, store = extracted
    code, _, err, report = views(store, tmp_path / "pics")
    assert code == 0, err
    assert report["as_stored"] and report["problems"] == [] and "warning" not in err
    assert all(r["photo_drawn"] and r["rerendered_label_matches"] for r in report["samples"])
    assert len(report["samples"]) == 2 * 3


def test_an_edited_source_photo_is_not_drawn_as_what_the_store_holds(extracted, tmp_path):
    data, store = extracted
    photo = sorted((data / "images").glob("*"))[0]
    pixels = np.asarray(Image.open(photo).convert("RGB")).copy()
    pixels[:8] = 255 - pixels[:8]  # the label is unchanged: only the data key can tell
    with edited(photo, lambda _: png(pixels)):
        code, stdout, err, report = views(store, tmp_path / "pics")
    assert code == 1, err
    assert not report["as_stored"] and "changed since" in report["problems"][0]
    assert not any(r["photo_drawn"] for r in report["samples"])  # which image changed is not known: none drawn
    assert f"warning: the files under {store.root} changed since {store.url}" in err
    error = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "6 of 6 panels" in error[0] and "views.json" in error[0]
    assert "stored label only, no photo" in stdout and "Traceback" not in err


def test_an_edited_mask_is_said_outside_the_picture(extracted, tmp_path):
    data, store = extracted
    mask = sorted((data / "masks").glob("*"))[1]
    with edited(mask, lambda _: png(255 - np.asarray(Image.open(mask)))):
        code, _, err, report = views(store, tmp_path / "pics")
    assert code == 1 and "changed since" in err and not report["as_stored"]
    assert not any(r["photo_drawn"] for r in report["samples"])


def test_an_unreachable_dataset_is_said_and_the_exit_status_says_so(extracted, tmp_path):
    data, store = extracted
    moved = data.with_name("elsewhere")
    data.rename(moved)
    try:
        code, _, err, report = views(store, tmp_path / "pics")
    finally:
        moved.rename(data)
    assert code == 1 and "not reachable here" in err and report["images"] == 2
    assert not any(r["photo_drawn"] for r in report["samples"])


def test_a_store_of_an_older_view_rule_draws_its_originals_and_only_the_labels_of_its_views(tmp_path, monkeypatch):
    data = make_hairlike_dataset(tmp_path / "d", n=2, size=64, seed=5)
    monkeypatch.setattr(view_rules, "RULE", "views-v1")  # the store is written as an older hairdiff wrote it
    store = extract(data, tmp_path / "c")
    monkeypatch.undo()
    assert store.fingerprint_inputs["views"]["rule"] == "views-v1"
    code, _, err, report = views(store, tmp_path / "pics")
    assert code == 1, err
    assert "views-v1" in report["problems"][0] and view_rules.RULE in report["problems"][0]  # this code's
    drawn = {(r["view"], r["photo_drawn"]) for r in report["samples"]}
    assert drawn == {("original", True), ("flip", False), ("scale0.5", False)}
    # The stored labels are still what each panel shows.
    for r in report["samples"]:
        label = store.read_label(store.ids.index(r["id"]))
        assert r["hair_fraction"] == pytest.approx((label == 1).mean())
