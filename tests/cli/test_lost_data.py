"""A store that lost a shard: training and evaluation stop with one line naming the store, the sample and
`pipeline cache verify`, instead of reading zeros (zarr returns fill values for a missing shard)."""
from __future__ import annotations

import os

from hairdiff.cache import FeatureStore
from hairdiff.train.loop import train
from tests.fixtures.cli import invoke
from tests.fixtures.stores import TINY, toy_train_config
from tests.fixtures.stores import make_train_store as make_store


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_train_and_eval_refuse_a_store_that_lost_a_shard(tmp_path):
    store = make_store(tmp_path, n=8)  # two shards of 4
    run = tmp_path / "run"
    train(toy_train_config(store, run, iters=2, batch_size=4, ckpt_every=2), device="cpu")
    key = FeatureStore.open(store).levels[1].key
    os.unlink(os.path.join(store, "features", key, "c", "1", "0", "0", "0"))  # samples 4..7
    head = [f"--head={k}={v}" for k, v in TINY.items()]
    code, _, err = invoke("train", "--cache", store, "--out", tmp_path / "again", "--iters", "4", "--batch-size", "8",
                          "--device", "cpu", "--no-progress", "--no-small", *head)
    line = one_error_line(err)
    assert code == 2 and store in line and "pipeline cache verify" in line and f"features/{key}" in line
    assert "toy00" in line  # the sample's id
    code, _, err = invoke("eval", "--run", run, "--cache", store, "--out", tmp_path / "eval", "--device", "cpu")
    line = one_error_line(err)
    assert code == 2 and store in line and "--repair" in line
    assert not (tmp_path / "eval" / "metrics.json").exists()
