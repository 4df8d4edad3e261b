"""Issue 26, class 10: a store written before per-sample digests. Its reads check only that shard files exist,
so a shard swapped for another valid one read back without an error; `cache verify` now says the store predates
digests, and `--repair` adds them: from then on a changed shard is found by every read."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hairdiff.cache import FeatureStore
from hairdiff.core.errors import CorruptSampleError, StoreMismatchError
from tests.fixtures.cli import invoke
from tests.fixtures.stores import make_eval_store, make_train_store, synthetic_samples

SHARD = Path("features") / "up_blocks_1" / "c" / "0" / "0" / "0" / "0"


def as_written_before_digests(store: Path) -> Path:
    """The store as hairdiff wrote it before digests: no `digests` array, no `digests` attribute."""
    shutil.rmtree(store / "digests")
    meta = json.loads((store / "zarr.json").read_text())
    del meta["attributes"]["digests"]
    (store / "zarr.json").write_text(json.dumps(meta))
    return store


def test_verify_says_an_old_store_predates_digests_and_repair_adds_them(tmp_path):
    old = as_written_before_digests(Path(make_train_store(tmp_path, "old", n=4)))
    other = Path(make_train_store(tmp_path, "other", n=4, seed=5))
    original = (old / SHARD).read_bytes()
    shutil.copyfile(other / SHARD, old / SHARD)  # another store's valid shard: nothing can tell, yet
    code, out, err = invoke("cache", "verify", old)
    assert code == 0, err
    assert "predates per-sample digests" in out and f"pipeline cache verify {old} --repair" in out
    code, out, err = invoke("cache", "verify", old, "--repair")
    assert code == 0 and "added per-sample digests: 4 done sample(s)" in out, (out, err)
    store = FeatureStore.open(str(old))
    assert store.has_digests and len(store.read_batch([0, 1, 2, 3])["ids"]) == 4  # what it holds now reads
    assert store.group["digests"].metadata.dimension_names == ("sample", "digest")  # xarray still opens it
    (old / SHARD).write_bytes(original)  # changed after the digests: every read finds it
    with pytest.raises(CorruptSampleError, match="features/up_blocks_1: does not match its checksum"):
        FeatureStore.open(str(old)).read_batch([0])
    code, out, _ = invoke("cache", "verify", old)
    assert code == 1 and "corrupt: sample 0" in out and "predates" not in out


def test_digests_added_to_an_int8_store_match_what_reads_check(tmp_path):
    samples = synthetic_samples(4)
    url = make_eval_store(tmp_path, "celebamask", samples, root=str(tmp_path), done=[0, 1, 3], precision="int8")
    before = FeatureStore.open(url).read_batch([0, 1, 3])
    as_written_before_digests(Path(url))
    store = FeatureStore.open(url, mode="r+")
    assert not store.has_digests and store.add_digests() == 3
    again = FeatureStore.open(url)
    after = again.read_batch([0, 1, 3])
    for k in before["features"]:
        np.testing.assert_array_equal(before["features"][k], after["features"][k])
    assert again.read_label(3).shape == samples[3][2].shape and again.read_sizes(1)[0] == samples[1][1]


def test_a_store_written_before_image_digests_gets_them_when_extract_reopens_it(tmp_path):
    from hairdiff.cache import fingerprint
    from hairdiff.cache.geometry import preprocessing_record
    from tests.fixtures.stores import INPUTS, LEVELS, R

    kw = dict(fingerprint=fingerprint(INPUTS), fingerprint_inputs=INPUTS, dataset="folder", split="all",
              root=str(tmp_path), ids=["a", "b"], levels=LEVELS, resolution=R, preprocessing=preprocessing_record(R),
              data_key="k" * 64)
    url = str(tmp_path / "s.zarr")
    assert FeatureStore.create_or_open(url, **kw).image_digests is None  # as stores were written before them
    assert FeatureStore.create_or_open(url, **kw, image_digests=["d1", "d2"]).image_digests == ["d1", "d2"]
    assert FeatureStore.open(url).image_digests == ["d1", "d2"]
    other = {**kw, "data_key": "o" * 64}
    with pytest.raises(StoreMismatchError, match="another sample list or other source files"):
        FeatureStore.create_or_open(url, **other, image_digests=["x", "y"])
