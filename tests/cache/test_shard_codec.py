"""Whole shards encoded in the writer's thread are byte for byte what zarr writes for the same data."""
from __future__ import annotations

import numpy as np
import pytest

from hairdiff.cache import FeatureStore, LevelSpec
from hairdiff.cache import shard_codec

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
