"""Stores with augmented views: training draws one done view per image per visit, reproducibly; evaluation
scores the original images only; a head trained on views scores on a store without them."""
from __future__ import annotations

import numpy as np

from hairdiff.cache import FeatureStore, fingerprint
from hairdiff.cache.geometry import letterbox_label, preprocessing_record
from hairdiff.evaluate.config import EvalConfig
from hairdiff.evaluate.run import evaluate_run
from hairdiff.train.data import BatchStream, CachedFeatures, Position
from hairdiff.train.loop import train
from tests.fixtures.stores import INPUTS, LEVELS, R, ellipse, make_run, toy_train_config

VIEWS = {"recipe": "flip+scale:1.5", "names": ["original", "flip", "scale1.5"], "num_images": 4}


def views_store(tmp, done=None, name="v") -> str:
    """4 images x 3 views; channel 0 of every level holds the view number, channel 1 the image number."""
    inputs = {**INPUTS, "views": {"recipe": VIEWS["recipe"]}}
    n = 4 * 3
    url = str(tmp / f"{name}.zarr")
    store = FeatureStore.create_or_open(url, fingerprint=fingerprint(inputs), fingerprint_inputs=inputs,
                                        dataset="figaro", split="train", root=str(tmp),
                                        ids=[f"{i}" for i in range(4)] + [f"{i}@{v}" for v in ("flip", "scale1.5")
                                                                        for i in range(4)],
                                        levels=LEVELS, resolution=R, preprocessing=preprocessing_record(R),
                                        shard_size=4, views=VIEWS)
    rng = np.random.default_rng(0)
    labels = [ellipse(R, R, rng) for _ in range(4)]
    for s in range(0, n, 4):
        idx = [j for j in range(s, s + 4) if done is None or j in done]
        if not idx:
            continue
        feats = {}
        for lv in LEVELS:
            f = rng.normal(0, 1, (len(idx), lv.channels, lv.height, lv.width)).astype(np.float32)
            f[:, 0] = np.array([j // 4 for j in idx])[:, None, None]
            f[:, 1] = np.array([j % 4 for j in idx])[:, None, None]
            feats[lv.name] = f
        lab = [labels[j % 4] for j in idx]
        store.write_samples(idx, feats, np.stack([letterbox_label(x, R) for x in lab]), lab, np.full((len(idx), 2), R))
    return url


def drawn(data, positions, epoch):
    b = data.read(np.asarray(positions), None if epoch is None else np.full(len(positions), epoch))
    f = b["features"][LEVELS[0].name].float().numpy()
    return [(int(f[j, 1, 0, 0]), int(f[j, 0, 0, 0])) for j in range(len(positions))]  # (image, view)


def test_one_done_view_per_image_per_visit(tmp_path):
    # image 3 has only its original and its flip done
    data = CachedFeatures.from_urls([views_store(tmp_path, done=set(range(12)) - {11})], seed=5)
    assert len(data) == 4 and data.fingerprint == fingerprint(INPUTS)  # the views stay out of it
    assert drawn(data, [0, 1, 2, 3], None) == [(0, 0), (1, 0), (2, 0), (3, 0)]  # no epoch: the originals
    seen = {i: set() for i in range(4)}
    for epoch in range(30):
        pairs = drawn(data, [0, 1, 2, 3], epoch)
        assert [p[0] for p in pairs] == [0, 1, 2, 3] and pairs == drawn(data, [0, 1, 2, 3], epoch)
        for image, view in pairs:
            seen[image].add(view)
    assert seen == {0: {0, 1, 2}, 1: {0, 1, 2}, 2: {0, 1, 2}, 3: {0, 1}}
    # The stream hands each visit its epoch: the same start gives the same views (resume is exact).
    with BatchStream(data, 3, 5, Position(2, 1)) as a, BatchStream(data, 3, 5, Position(2, 1)) as b:
        for _ in range(4):
            x, y = next(a)[0]["features"][LEVELS[0].name], next(b)[0]["features"][LEVELS[0].name]
            assert (x == y).all()


def test_a_head_trained_on_views_scores_the_originals_of_any_store(tmp_path):
    store = views_store(tmp_path)
    run = tmp_path / "trained"
    train(toy_train_config(store, run, iters=2, batch_size=2, ckpt_every=2), device="cpu")
    m = evaluate_run(EvalConfig(run=run, cache=store, out=tmp_path / "eval", device="cpu", overlays=0))
    assert m["images"] == 4  # the originals of the 12 samples
    plain = make_run(tmp_path)  # a head trained without views scores the views store too
    m = evaluate_run(EvalConfig(run=plain, cache=store, out=tmp_path / "eval2", device="cpu", overlays=0))
    assert m["images"] == 4
