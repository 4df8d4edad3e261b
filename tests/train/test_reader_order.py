"""The training reader, run ahead on several threads, gives exactly the batches the one-at-a-time zarr reader
gave: the same samples (views drawn the same), in the same order, with the same resume positions, for every
DDP rank; and a lost shard stops it with the same error at the same batch."""
from __future__ import annotations

import os

import numpy as np
import pytest

from hairdiff.cache import FeatureStore
from hairdiff.core.errors import CorruptSampleError
from hairdiff.train.data import BatchStream, CachedFeatures, Position, global_visits, rank_slice
from tests.fixtures.stores import make_eval_store, make_train_store, synthetic_samples
from tests.train.test_views_training import views_store


def zarr_read(data: CachedFeatures, positions, epochs) -> dict:
    """CachedFeatures.read as it was before the store decoded samples itself: zarr's own read of each
    store's distinct samples in ascending order, put back in batch order."""
    rows = data.samples(np.asarray(positions), epochs)
    feats = {lv.name: np.empty((len(rows), lv.channels, lv.height, lv.width), np.float16) for lv in data.levels}
    labels = np.empty((len(rows), data.resolution, data.resolution), np.uint8)
    for k in np.unique(rows[:, 0]):
        store = data.stores[int(k)]
        sel = np.flatnonzero(rows[:, 0] == k)
        uniq, inv = np.unique(rows[sel, 1], return_inverse=True)
        for lv in data.levels:
            feats[lv.name][sel] = np.stack([store.group[f"features/{lv.key}"][int(i)] for i in uniq])[inv]
        labels[sel] = np.stack([store.group["masks"][int(i)] for i in uniq])[inv]
    return {"features": feats, "labels": labels}


def reference(data, batch_size, seed, start, rank, world, n):
    """(batch, position after) of the first n batches, read one after the other."""
    out, pos = [], start
    for _ in range(n):
        batch, epochs, pos = global_visits(len(data), batch_size, seed, pos)
        mine, first = rank_slice(batch, rank, world)
        out.append((zarr_read(data, mine, epochs[first:first + len(mine)]), mine, first, pos))
    return out


def assert_same(got, want):
    (b, after), (ref, mine, first, pos) = got, want
    assert after == pos and b["global_start"] == first and np.array_equal(b["positions"].numpy(), mine)
    assert np.array_equal(b["labels"].numpy(), ref["labels"])
    for name, v in ref["features"].items():
        assert b["features"][name].numpy().tobytes() == v.tobytes(), name


def test_threads_reading_ahead_give_the_old_batches_for_every_rank_and_resume(tmp_path):
    # 4 images with views (image 3 lacks a view) + 5 plain ones: 9 images, a global batch of 12 repeats some
    stores = [views_store(tmp_path, done=set(range(12)) - {11}),
              make_eval_store(tmp_path, "plain", synthetic_samples(5), root=str(tmp_path), split="train")]
    for urls, n in ((stores[:1], 4), (stores, 9)):  # one store (read in place), two (put together)
        data = CachedFeatures([FeatureStore.open(u) for u in urls], seed=3)
        assert len(data) == n
        for rank in (0, 1):
            want = reference(data, 12, 3, Position(), rank, 2, 7)
            assert any(len(set(w[1])) < len(w[1]) for w in want)  # images visited twice in one batch
            with BatchStream(data, 12, 3, Position(), rank, 2, workers=3, prefetch=2) as stream:
                for w in want:
                    assert_same(next(stream), w)
            resumed_at = want[2][3]  # a checkpoint after the third batch
            with BatchStream(data, 12, 3, resumed_at, rank, 2, workers=2, prefetch=4) as stream:
                for w in want[3:]:
                    assert_same(next(stream), w)


def test_a_lost_shard_stops_the_stream_at_its_batch_with_the_one_line_error(tmp_path):
    url = make_train_store(tmp_path, n=8)  # two shards of 4
    data = CachedFeatures.from_urls([url], seed=0)
    # a seed whose first batches read shard 0 only: the stream must deliver them, then stop
    seed = next(s for s in range(100) if (global_visits(8, 4, s, Position())[0] < 4).all())
    want = reference(data, 2, seed, Position(), 0, 1, 8)
    bad = next(j for j, w in enumerate(want) if (w[1] >= 4).any())  # the first batch reading shard 1
    assert bad >= 2
    os.unlink(os.path.join(url, "features", data.levels[1].key, "c", "1", "0", "0", "0"))
    with BatchStream(data, 2, seed, Position(), workers=3, prefetch=3) as stream:
        for w in want[:bad]:
            assert_same(next(stream), w)
        with pytest.raises(CorruptSampleError) as e:
            next(stream)
    msg = str(e.value)
    assert url in msg and "pipeline cache verify" in msg and "\n" not in msg
    assert any(f"toy{i:03d}" in msg for i in want[bad][1] if i >= 4)
