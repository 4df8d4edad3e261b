"""Issue 26, class 7: "held out" is decided by the images actually used, by the content of their photos.

A `--val` store of frames 5-6 shares nothing with a `--limit 4` store of frames 1-4 (whose list of ids holds
them all); scoring frames 5-6 is held-out data, also after the training store gained frames 5-8; a store of
the same photos with re-saved masks (other bytes, other folder) and CelebAMask-HQ's `all` against `test`
share images, and are refused as --val and warned about by eval.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hairdiff.cache import FeatureStore, fingerprint
from hairdiff.cache.geometry import preprocessing_record
from tests.fixtures.cli import invoke
from tests.fixtures.layouts import make_folder
from tests.fixtures.stores import LEVELS, TINY, R, features_for, hair_label

HEAD = [f"--head={k}={v}" for k, v in TINY.items()]
INPUTS = {"model": {"kind": "toy", "name": "toy-encoder"}, "levels": [lv.name for lv in LEVELS],
          "preprocessing": preprocessing_record(R)}


def photo(name: str) -> str:
    """The content digest of a photo called `name` (one photo per name, wherever it is stored)."""
    return hashlib.sha256(name.encode()).hexdigest()


def store_of(tmp: Path, name: str, ids: list[str], done: list[int], dataset="figaro", split="Training",
             root="/data/fig") -> str:
    """A real store of `ids` (photos named by id) as extract keeps it: image digests, `done` samples written."""
    url = str(tmp / f"{name}.zarr")
    data_key = hashlib.sha256(repr((name, ids)).encode()).hexdigest()
    s = FeatureStore.create_or_open(url, fingerprint=fingerprint(INPUTS), fingerprint_inputs=INPUTS, dataset=dataset,
                                    split=split, root=root, ids=ids, levels=LEVELS, resolution=R,
                                    preprocessing=preprocessing_record(R), shard_size=2, data_key=data_key,
                                    image_digests=[photo(i) for i in ids])
    write(s, done)
    return url


def write(s: FeatureStore, indices: list[int]) -> None:
    rng = np.random.default_rng(len(indices))
    for i in indices:
        label = hair_label(rng)
        feats = features_for(label, rng)
        s.write_samples([i], {k: v[None] for k, v in feats.items()}, label[None], [label], np.full((1, 2), R))


@pytest.fixture()
def tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the session's cache folder keeps the built tiny model
    return tmp_path


def train(store, run, *extra) -> tuple[int, str]:
    code, _, err = invoke("train", "--cache", store, "--out", run, "--iters", "1", "--batch-size", "2", "--device",
                          "cpu", "--no-progress", "--no-small", "--workers", "0", *HEAD, *extra)
    return code, err


def evaluate(tmp: Path, run, store, name: str) -> tuple[str, dict]:
    out = tmp / f"eval-{name}"
    code, _, err = invoke("eval", "--run", run, "--cache", store, "--out", out, "--device", "cpu", "--overlays", "0")
    assert code == 0, err
    return err, json.loads((out / "metrics.json").read_text())


FRAMES = [f"Frame{f:05d}" for f in range(1, 9)]


def test_held_out_frames_of_one_split_are_held_out_whatever_the_training_store_lists(tmp):
    trained = store_of(tmp, "limit4", FRAMES, done=[0, 1, 2, 3])  # `--limit 4`: lists frames 1-8, holds 1-4
    val = store_of(tmp, "val", FRAMES[4:6], done=[0, 1])  # `--ids`: frames 5-6
    mixed = store_of(tmp, "mixed", [FRAMES[2], FRAMES[6]], done=[0, 1])  # frames 3 and 7
    run = tmp / "run"
    code, err = train(trained, run, "--val", val)
    assert code == 0 and (run / "best").is_dir(), err  # validated: accepted as held out
    code, err = train(trained, tmp / "run2", "--val", mixed)
    assert code == 2 and f"--val {mixed} shares 1 of its 2 images with the training store" in err, err
    assert "'Frame00003'" in err
    write(FeatureStore.open(trained, mode="r+"), [4, 5, 6, 7])  # it gains frames 5-8 after the run
    err, m = evaluate(tmp, run, val, "val")
    assert "training data" not in err and not m["evaluated_on_training_store"] and m["training_images"] == 0, err
    err, m = evaluate(tmp, run, mixed, "mixed")
    assert f"warning: {mixed} holds 1 of its 2 images in a store this run trained on" in err, err
    assert m["evaluated_on_training_store"] and m["training_images"] == 1


def test_two_splits_of_one_pool_share_their_images(tmp):
    ids = [str(i) for i in range(6)]
    everything = store_of(tmp, "all", ids, done=list(range(6)), dataset="celebamask", split="all", root="/celeba")
    test = store_of(tmp, "test", ids[4:], done=[0, 1], dataset="celebamask", split="test", root="/celeba")
    code, err = train(everything, tmp / "run", "--val", test)
    assert code == 2 and f"--val {test} shares 2 of its 2 images with the training store {everything}" in err, err
    code, err = train(everything, tmp / "run")
    assert code == 0, err
    err, m = evaluate(tmp, tmp / "run", test, "test")
    assert f"warning: {test} is a store this run trained on" in err and m["training_images"] == 2, err


def test_the_same_photos_with_resaved_masks_are_the_same_images(tmp):
    """Through the real extraction: stores keep their photos' digests, whatever their masks' bytes."""
    root = make_folder(tmp / "data", stems=("a", "b"), size=(16, 16))
    copy = Path(shutil.copytree(root, tmp / "copy"))
    for mask in (copy / "masks").iterdir():  # the same pixels in other bytes
        Image.open(mask).save(mask, compress_level=0)
    assert (copy / "masks" / "a.png").read_bytes() != (root / "masks" / "a.png").read_bytes()
    stores = []
    for r in (root, copy):
        code, out, err = invoke("extract", "--dataset", "folder", "--root", r, "--model", "tiny", "--resolution", "64",
                                "--workers", "0", "--cache-root", tmp / "cache")
        assert code == 0, err
        stores.append(out.strip().splitlines()[-1])
    assert FeatureStore.open(stores[0]).data_key != FeatureStore.open(stores[1]).data_key
    code, err = train(stores[0], tmp / "run", "--val", stores[1])
    assert code == 2 and f"error: --val {stores[1]} shares 2 of its 2 images" in err.strip().splitlines()[-1], err
    assert not (tmp / "run" / "best").exists()
