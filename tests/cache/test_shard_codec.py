"""Whole shards encoded in the writer's thread are byte for byte what zarr writes for the same data."""
from __future__ import annotations

import numpy as np
import pytest

from hairdiff.cache import FeatureStore, LevelSpec, shard_codec

LEVELS = [LevelSpec("a", 8, 16, 8, 8), LevelSpec("b", 4, 4, 16, 16)]


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_shards_equal_zarrs_own_encoding(tmp_path, precision):
    store = FeatureStore.create_or_open(str(tmp_path / "s.zarr"), fingerprint="a" * 64, fingerprint_inputs={},
                                        dataset="x", split="y", root="/", ids=[str(i) for i in range(10)],
                                        levels=LEVELS, resolution=32, preprocessing={}, shard_size=4,
                                        precision=precision)
    rng = np.random.default_rng(0)
    names = [f"features/{lv.key}" for lv in LEVELS] + ["masks"]
    for name in names:
        arr = store.group[name]
        assert shard_codec.encodable(arr), name
        x = (rng.standard_normal((4, *arr.shape[1:])) * 30).astype(arr.dtype)
        for k, n in ((0, 4), (2, 2)):  # a full shard, and the last one holding 2 of its 4 samples
            arr[k * 4:k * 4 + n] = x[:n]  # zarr's own write
            path = tmp_path / "s.zarr" / name / "c" / str(k) / "/".join(["0"] * (arr.ndim - 1))
            assert shard_codec.encode_shard(arr, x[:n]) == path.read_bytes(), (name, k)
            path.unlink()
            shard_codec.write_shard(arr, k, x[:n])  # and ours reads back through zarr
            assert np.array_equal(arr[k * 4:k * 4 + n], x[:n])
    for name in ("done", "labels", "digests", "orig_sizes"):
        assert not shard_codec.encodable(store.group[name]), name


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_reads_equal_zarrs_own_in_any_order_with_repeats_and_holes(tmp_path, precision):
    """What the reader gets from every array read_batch touches, against zarr's own read of the same rows:
    unordered, repeated, across shards, in a partial last shard, and in a shard never written (fill value)."""
    n = 11  # shards of 4: 0..3, 4..7, 8..10 (a partial last shard)
    store = FeatureStore.create_or_open(str(tmp_path / "s.zarr"), fingerprint="a" * 64, fingerprint_inputs={},
                                        dataset="x", split="y", root="/", ids=[str(i) for i in range(n)],
                                        levels=LEVELS, resolution=32, preprocessing={}, shard_size=4,
                                        precision=precision)
    rng = np.random.default_rng(1)
    for idx in ([0, 1, 2, 3], [8, 10]):  # shard 1 never written; 9 missing in the last
        feats = {lv.name: rng.standard_normal((len(idx), lv.channels, lv.height, lv.width)).astype(np.float32)
                 for lv in LEVELS}
        store.write_samples(idx, feats, rng.integers(0, 3, (len(idx), 32, 32)).astype(np.uint8),
                            [np.zeros((3, 5), np.uint8)] * len(idx), np.full((len(idx), 2), 32))
    idx = np.array([10, 2, 5, 2, 0, 9, 8, 10, 3])
    g = store.group
    names = [n for n in (f"features/{lv.key}" + s for lv in LEVELS for s in ("", "__scale", "__offset")) if n in g]
    names += ["masks", "done", "digests", "orig_sizes", "label_sizes"]
    assert all(shard_codec.readable(g[name]) for name in names)
    got = shard_codec.read_arrays({name: g[name] for name in names}, idx)
    for name in names:
        want = np.stack([g[name][int(i)] for i in idx])
        assert got[name].dtype == want.dtype and np.array_equal(got[name], want), name
    b = FeatureStore.open(store.url).read_batch(idx[idx != 5][idx[idx != 5] != 9])  # done samples only
    assert b["ids"] == ["10", "2", "2", "0", "8", "10", "3"]


def test_reads_name_the_sample_of_a_changed_chunk_or_index(tmp_path):
    from hairdiff.core.errors import CorruptSampleError

    store = FeatureStore.create_or_open(str(tmp_path / "s.zarr"), fingerprint="a" * 64, fingerprint_inputs={},
                                        dataset="x", split="y", root="/", ids=[f"id{i}" for i in range(8)],
                                        levels=LEVELS, resolution=32, preprocessing={}, shard_size=4)
    rng = np.random.default_rng(2)
    for lo in (0, 4):
        store.write_samples(list(range(lo, lo + 4)),
                            {lv.name: rng.standard_normal((4, lv.channels, lv.height, lv.width)) for lv in LEVELS},
                            np.zeros((4, 32, 32), np.uint8), [np.zeros((3, 5), np.uint8)] * 4, np.full((4, 2), 32))
    path = tmp_path / "s.zarr" / "features" / LEVELS[0].key / "c" / "1" / "0" / "0" / "0"
    good = path.read_bytes()
    index = np.frombuffer(good[-4 * 16 - 4:-4], "<u8").reshape(4, 2)
    for where, sample in ((int(index[2, 0]) + 20, "id6"), (len(good) - 10, "id5")):  # a chunk; the index
        bad = bytearray(good)
        bad[where] ^= 0x10
        path.write_bytes(bytes(bad))
        with pytest.raises(CorruptSampleError) as e:
            FeatureStore.open(store.url).read_batch([0, 6, 5])
        assert sample in str(e.value) and f"features/{LEVELS[0].key}: does not decode" in str(e.value)
    path.write_bytes(good[:100])  # truncated
    with pytest.raises(CorruptSampleError, match="id5"):
        FeatureStore.open(store.url).read_batch([5])
