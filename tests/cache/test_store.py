"""The feature store itself: fp16 and int8 round trips, partial shards, verify, claims, refusals."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import zarr

from hairdiff.cache import FeatureStore, LevelSpec, open_store
from hairdiff.cache.verify import verify
from hairdiff.core.errors import (CorruptSampleError, ReadOnlyStoreError, SchemaVersionError, StoreMismatchError,
                                  StoreNotFoundError)

R = 16
LEVELS = [LevelSpec("unet.up_blocks.0", 8, 6, 2, 2), LevelSpec("unet.up_blocks.3", 4, 3, 4, 4)]


def create(tmp_path, precision="fp16", n=5, shard_size=2, fp="a" * 64, ids=None, name="s.zarr"):
    return FeatureStore.create_or_open(
        str(tmp_path / name), fingerprint=fp, fingerprint_inputs={"model": "toy"}, dataset="folder", split="all",
        root=str(tmp_path), ids=ids or [f"s{i}" for i in range(n)], levels=LEVELS, resolution=R, preprocessing={},
        precision=precision, shard_size=shard_size)


def sample(i: int):
    rng = np.random.default_rng(i)
    feats = {lv.name: (rng.normal(0, 3, (lv.channels, lv.height, lv.width)) * (1 + i)).astype(np.float32)
             for lv in LEVELS}
    feats[LEVELS[1].name][1] = 7.25  # a constant channel: int8 must still give it back exactly
    mask = rng.integers(0, 2, (R, R)).astype(np.uint8)
    mask[-3:] = 255
    label = rng.integers(0, 2, (5 + i, 9)).astype(np.uint8)
    return feats, mask, label, (10 + i, 18)


def write(store, indices):
    parts = [sample(i) for i in indices]
    store.write_samples(indices, {lv.name: np.stack([p[0][lv.name] for p in parts]) for lv in LEVELS},
                        np.stack([p[1] for p in parts]), [p[2] for p in parts], np.array([p[3] for p in parts]))


def test_fp16_round_trip_and_partial_shards(tmp_path):
    store = create(tmp_path)
    write(store, [1])  # the second sample of shard 0 first
    write(store, [0])  # then the first: sample 1 must survive the rewrite of its shard
    write(store, [4])
    assert store.done_mask().tolist() == [True, True, False, False, True]
    assert store.missing_indices().tolist() == [2, 3]
    for i in (0, 1, 4):
        feats, mask, label, size = sample(i)
        got = FeatureStore.open(store.url).read_sample(i)
        for name, x in feats.items():
            assert got["features"][name].dtype == np.float16
            assert np.array_equal(got["features"][name], x.astype(np.float16)), (i, name)
        assert np.array_equal(got["mask"], mask) and got["orig_size"] == size and got["id"] == f"s{i}"
        assert np.array_equal(store.read_label(i), label)  # exact, at the annotation's own size
    batch = store.read_batch([4, 0])
    assert batch["ids"] == ["s4", "s0"]
    assert np.array_equal(batch["features"][LEVELS[0].name][0], sample(4)[0][LEVELS[0].name].astype(np.float16))
    assert open_store(store.url).features(LEVELS[0].name).shape == (5, 6, 2, 2)
    # plain zarr reads it too
    g = zarr.open_group(store.url, mode="r")
    assert g["features"][LEVELS[0].key].dtype == np.float16


def test_int8_round_trip_within_half_a_step_per_channel(tmp_path):
    store = create(tmp_path, precision="int8")
    write(store, [0, 1])
    for i in (0, 1):
        got = store.read_sample(i)["features"]
        for name, x in sample(i)[0].items():
            flat = x.reshape(x.shape[0], -1)
            step = (flat.max(1) - flat.min(1)) / 254.0
            err = np.abs(got[name].astype(np.float32) - x).reshape(x.shape[0], -1).max(1)
            # half a quantisation step, plus the float16 rounding of the dequantised value
            assert (err <= step / 2 + np.abs(flat).max(1) * 2 ** -11 + 1e-6).all(), (name, err, step)
    assert np.allclose(store.read_sample(0)["features"][LEVELS[1].name][1], 7.25)
    g = zarr.open_group(store.url, mode="r")
    assert g["features"][LEVELS[0].key].dtype == np.int8
    assert store.info()["precision"] == "int8"


def test_verify_names_corrupt_missing_and_lost_samples(tmp_path):
    store = create(tmp_path, n=6)
    write(store, [0, 1])
    write(store, [2, 3])
    report = verify(store)
    assert report["done"] == 4 and not report["corrupt"]
    assert [m["id"] for m in report["not_extracted"]] == ["s4", "s5"]
    shard0 = tmp_path / "s.zarr" / "features" / LEVELS[0].key / "c" / "0" / "0" / "0" / "0"
    raw = bytearray(shard0.read_bytes())
    raw[len(raw) // 4] ^= 0x40
    shard0.write_bytes(bytes(raw))
    (tmp_path / "s.zarr" / "masks" / "c" / "1" / "0" / "0").unlink()
    report = verify(FeatureStore.open(store.url))
    bad = {r["id"]: r["problems"] for r in report["corrupt"]}
    assert set(bad) >= {"s2", "s3"} and any("shard file missing" in p for p in bad["s2"])
    assert bad.keys() & {"s0", "s1"}
    assert not report["ok"]


def test_claims_exclude_a_live_holder_and_take_over_a_dead_one(tmp_path):
    store = create(tmp_path)
    with store.claim(0) as mine:
        assert mine
        with store.claim(0) as again:
            assert not again  # held by a live process (this one)
        with store.claim(1) as other:
            assert other  # shards are independent
    with store.claim(0) as after:
        assert after  # released on exit
    claim = tmp_path / "s.zarr.claims" / "2.json"
    claim.parent.mkdir(exist_ok=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket
    import time

    claim.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "time": time.time(),
                                 "token": "x"}))
    with store.claim(2) as taken:
        assert taken  # its holder is gone
    claim.write_text('{"host": "torn')  # a claim file cut short by a kill
    with store.claim(2) as taken:
        assert taken
    assert not claim.exists()


def test_refusals(tmp_path):
    store = create(tmp_path)
    with pytest.raises(StoreMismatchError, match="fingerprint"):
        create(tmp_path, fp="b" * 64)
    with pytest.raises(StoreMismatchError, match="sample list"):
        create(tmp_path, ids=["x", "y"])
    with pytest.raises(ReadOnlyStoreError):
        write(FeatureStore.open(store.url), [0])
    with pytest.raises(StoreNotFoundError):
        FeatureStore.open(str(tmp_path / "nothing.zarr"))
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(StoreNotFoundError, match="not a hairdiff feature store"):
        FeatureStore.open(str(tmp_path / "plain.zarr"))
    g = zarr.open_group(store.url, mode="r+")
    g.attrs["schema_version"] = 99
    with pytest.raises(SchemaVersionError, match="newer hairdiff"):
        FeatureStore.open(store.url)


def test_stores_written_before_ids_digest_was_an_attribute(tmp_path):
    store = create(tmp_path)
    g = zarr.open_group(store.url, mode="r+")
    g.attrs["split"] = "Training-ids-0a1b2c3d"
    del g.attrs["ids_digest"]
    old = FeatureStore.open(store.url)
    assert (old.split, old.ids_digest) == ("Training", "0a1b2c3d")


def test_write_stays_inside_one_shard(tmp_path):
    store = create(tmp_path)
    with pytest.raises(ValueError, match="one shard"):
        write(store, [1, 2])
    assert not os.path.exists(tmp_path / "s.zarr" / "features" / LEVELS[0].key / "c" / "0")


def _shard_file(store, array, k, ndim):
    return os.path.join(store.url, array, "c", str(k), *["0"] * (ndim - 1))


@pytest.mark.parametrize("digests", [True, False], ids=["digests", "legacy-store"])
def test_reading_a_lost_shard_is_an_error_not_zeros(tmp_path, digests):
    store = create(tmp_path, n=4)
    write(store, [0, 1])
    write(store, [2, 3])
    if not digests:  # a store written before per-sample digests: presence of its shard files is checked
        g = zarr.open_group(store.url, mode="r+")
        del g.attrs["digests"]
    os.unlink(_shard_file(store, f"features/{LEVELS[1].key}", 1, 4))
    s = FeatureStore.open(store.url)
    assert s.read_sample(0)["id"] == "s0"  # the other shard still reads
    with pytest.raises(CorruptSampleError) as e:
        s.read_batch([0, 3])
    msg = str(e.value)
    assert "s2" in msg or "s3" in msg
    assert store.url in msg and "pipeline cache verify" in msg and "\n" not in msg


def test_flipped_bits_and_lost_masks_labels_sizes_are_named(tmp_path):
    store = create(tmp_path, n=4)
    write(store, [0, 1])
    write(store, [2, 3])
    shard = _shard_file(store, f"features/{LEVELS[0].key}", 0, 4)
    raw = bytearray(open(shard, "rb").read())
    raw[len(raw) // 3] ^= 0x08
    open(shard, "wb").write(bytes(raw))
    with pytest.raises(CorruptSampleError, match="index 0|index 1"):
        FeatureStore.open(store.url).read_batch([0, 1])
    os.unlink(_shard_file(store, "masks", 1, 3))
    with pytest.raises(CorruptSampleError, match="masks"):
        FeatureStore.open(store.url).read_sample(2)
    write(store, [2, 3])  # rewritten: reads again
    os.unlink(os.path.join(store.url, "labels", "c", "1"))
    with pytest.raises(CorruptSampleError, match="label"):
        FeatureStore.open(store.url).read_label(3)
    os.unlink(os.path.join(store.url, "orig_sizes", "c", "1", "0"))
    with pytest.raises(CorruptSampleError, match="sizes"):
        FeatureStore.open(store.url).read_sizes(3)
    with pytest.raises(CorruptSampleError, match="sizes"):
        FeatureStore.open(store.url).read_batch([2])
