"""The cache for other models: `hairdiff.cache.open_store`, read-only and verified, as a torch Dataset and dask
arrays; xarray and dask open a store directly by its names."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from hairdiff.cache import open_store
from hairdiff.core.errors import CorruptSampleError, StoreNotFoundError, UsageError
from tests.fixtures.stores import LEVELS, make_train_store


@pytest.fixture(scope="module")
def store_url(tmp_path_factory):
    return make_train_store(tmp_path_factory.mktemp("reader"), n=12, seed=3, image_digests=True)


def test_a_linear_probe_learns_from_a_store_through_the_public_api_alone(store_url, tmp_path):
    # Everything below uses open_store's answers only: levels, the Dataset and its items.
    store = open_store(store_url)
    level = store.level("up_blocks.3")  # stride 4: one feature cell per 4x4 pixels of the mask
    data = store.torch_dataset(levels=[level.name])
    assert len(data) == store.num_samples == 12 and data[0]["id"] == store.ids[0]
    torch.manual_seed(0)
    probe = torch.nn.Conv2d(level.channels, 2, 1)  # a linear map of each feature cell to (background, hair)
    opt = torch.optim.SGD(probe.parameters(), lr=0.5)
    loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=True)

    def loss_and_accuracy(batch):
        logits = torch.nn.functional.interpolate(probe(batch["features"][level.name]), size=batch["mask"].shape[-2:])
        target = batch["mask"].long()
        loss = torch.nn.functional.cross_entropy(logits, target, ignore_index=255)
        keep = target != 255
        return loss, float((logits.argmax(1) == target)[keep].float().mean())

    before = np.mean([loss_and_accuracy(b)[1] for b in loader])
    for _ in range(6):
        for batch in loader:
            loss, _ = loss_and_accuracy(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        after = np.mean([loss_and_accuracy(b)[1] for b in loader])
    hair_share = float(np.mean([(b["mask"] == 1).float().sum() / (b["mask"] != 255).float().sum() for b in loader]))
    assert after > 0.9 and after > max(hair_share, 1 - hair_share) + 0.05, (before, after, hair_share)


def test_dask_arrays_are_the_verified_samples(store_url):
    store = open_store(store_url)
    data = store.torch_dataset()
    for lv in LEVELS:
        x = store.features(lv.name)
        assert x.shape == (12, lv.channels, lv.height, lv.width) and x.dtype == np.float16
        assert x.chunks[0] == (4, 4, 4)  # one chunk per shard
        got = x.compute()
        for i in (0, 5, 11):
            np.testing.assert_array_equal(got[i].astype(np.float32), data[i]["features"][lv.name].numpy())
    masks = store.masks().compute()
    assert masks.shape == (12, store.resolution, store.resolution)
    np.testing.assert_array_equal(masks[7], data[7]["mask"].numpy())
    np.testing.assert_array_equal(store.label(7), store.sample(7)["mask"])  # annotations at the store's size here


def test_samples_not_extracted_are_left_out_and_lost_data_is_an_error(tmp_path):
    from tests.fixtures.stores import INPUTS, R, make_eval_store, synthetic_samples

    url = make_eval_store(tmp_path, "figaro", synthetic_samples(), root=str(tmp_path), done=[0, 1, 3])
    store = open_store(url)
    assert store.done.tolist() == [True, True, False, True, False]
    assert [item["index"] for item in store.torch_dataset()] == [0, 1, 3]
    x = store.features(LEVELS[0].name).compute()
    assert np.isnan(x[[2, 4]]).all() and not np.isnan(x[[0, 1, 3]]).any()
    assert (store.masks().compute()[[2, 4]] == 255).all()
    assert store.fingerprint_inputs == INPUTS and store.resolution == R
    # A shard file lost after the store was written: every read of its done samples says so.
    shard = os.path.join(url, "features", LEVELS[0].key, "c", "0", "0", "0", "0")
    os.remove(shard)
    with pytest.raises(CorruptSampleError, match="is flagged done but unreadable"):
        store.features(LEVELS[0].name).compute()
    with pytest.raises(CorruptSampleError):
        store.torch_dataset()[0]
    with pytest.raises(StoreNotFoundError):
        open_store(tmp_path / "nothing.zarr")


def test_xarray_and_dask_open_a_store_directly_by_its_names(store_url):
    xr = pytest.importorskip("xarray")
    import dask.array as da

    store = open_store(store_url)
    features = xr.open_zarr(store_url, group="features", consolidated=False)
    lv = store.level("up_blocks.2")
    var = features[lv.key]
    assert var.dims == ("sample", f"{lv.key}_channel", f"{lv.key}_y", f"{lv.key}_x")
    np.testing.assert_array_equal(var.values, store.features(lv.name).compute())
    root = xr.open_zarr(store_url, consolidated=False)
    assert root["masks"].dims == ("sample", "y", "x") and list(root["ids"].values) == store.ids
    assert root["image_digests"].dims == ("image",) and root["digests"].dims == ("sample", "digest")
    np.testing.assert_array_equal(da.from_zarr(store_url, component=f"features/{lv.key}").compute(), var.values)


def test_loader_workers_that_are_not_forks_read_the_same_samples(store_url):
    # spawn (macOS, Windows) and the fork server (Python 3.14's default on Linux) hand each worker the dataset
    # pickled: the store travels without its writers' lock and reads the same samples
    data = open_store(store_url).torch_dataset()
    here = next(iter(torch.utils.data.DataLoader(data, batch_size=6)))
    loader = torch.utils.data.DataLoader(data, batch_size=6, num_workers=1, multiprocessing_context="forkserver")
    there = next(iter(loader))
    assert there["id"] == here["id"]
    for name, f in here["features"].items():
        torch.testing.assert_close(there["features"][name], f, rtol=0, atol=0)
    assert torch.equal(there["mask"], here["mask"])


def test_samples_not_extracted_read_as_nan_in_a_store_written_before_digests(tmp_path):
    # Such a store proves a done sample by its shard files being there; a sample not extracted yet has none and
    # is never read: NaN features, an ignored mask, not "flagged done but unreadable"
    from tests.cache.test_digests_upgrade import as_written_before_digests
    from tests.fixtures.stores import make_eval_store, synthetic_samples

    url = make_eval_store(tmp_path, "celebamask", synthetic_samples(5), root=str(tmp_path), done=[0, 1, 3])
    as_written_before_digests(Path(url))
    store = open_store(url)
    level = store.levels[0].name
    x = store.features(level).compute()
    assert np.isnan(x[[2, 4]]).all() and not np.isnan(x[[0, 1, 3]]).any()
    assert (store.masks().compute()[[2, 4]] == 255).all()
    with pytest.raises(UsageError, match=r"sample 4 \(.*\) of .* is not extracted yet"):
        store.torch_dataset(samples=[0, 4])
