"""A run begun with the per-image loss normalisation (hairdiff before Mask2Former's) is not continued with
Mask2Former's: its curve would change rule mid-run. A finished one is still read back."""
from __future__ import annotations

import json

import pytest

from hairdiff.core.errors import RunDirError
from hairdiff.model.checkpoints import latest_checkpoint
from hairdiff.train.loop import LOSS_RULE, train
from tests.fixtures.stores import make_train_store, toy_train_config


def _run(store, run, **kw):
    return train(toy_train_config(store, run, **{"batch_size": 2, "lr": 1e-3, "seed": 5, "ckpt_every": 2, **kw}),
                 device="cpu")


def _as_before_the_rule(path):
    record = json.loads(path.read_text())
    assert record["config"].pop("loss") == LOSS_RULE  # what every run records now
    path.write_text(json.dumps(record))


def test_a_checkpoint_of_the_per_image_loss_is_not_resumed_and_a_finished_run_is_read(tmp_path):
    store = make_train_store(tmp_path, n=4)
    run = tmp_path / "run"
    _run(store, run, iters=4, stop_at=2)
    _as_before_the_rule(latest_checkpoint(run) / "state.json")
    with pytest.raises(RunDirError, match="per-image .*--overwrite"):
        _run(store, run, iters=4, resume=True)
    _run(store, run, iters=4, overwrite=True)
    _as_before_the_rule(run / "run.json")
    assert _run(store, run, iters=4, resume=True)["iterations"] == 4  # finished before: nothing to redo
