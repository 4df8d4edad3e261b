"""Two CPU processes (torchrun, gloo) with a global batch of 4 train like one process with a batch of 4.

The two-process run goes through `pipeline train --nproc 2`, i.e. the relaunch built from TrainConfig."""
from __future__ import annotations

import numpy as np
from safetensors.torch import load_file

from hairdiff.train.loop import train
from tests.fixtures.cli import run_pipeline
from tests.fixtures.stores import TINY, log_rows, toy_train_config
from tests.fixtures.stores import make_train_store as make_store


def test_two_processes_match_one(tmp_path):
    store = make_store(tmp_path, n=8)
    one, two = tmp_path / "one", tmp_path / "two"
    train(toy_train_config(store, one, iters=3, batch_size=4, lr=1e-3, seed=1, ckpt_every=3), device="cpu")
    res = run_pipeline("train", "--nproc", "2", "--cache", store, "--out", two, "--iters", "3", "--batch-size", "4",
                       "--lr", "1e-3", "--seed", "1", "--device", "cpu", "--ckpt-every", "3", "--no-progress",
                       "--no-small", *[f"--head={k}={v}" for k, v in TINY.items()], cache_root=tmp_path,
                       own_process=True)  # torchrun's processes print to the real stdout
    assert res.stdout.strip().splitlines()[-1] == str(two)  # rank 0 prints the run folder last

    a, b = log_rows(one), log_rows(two)
    assert [r["iter"] for r in b] == [1, 2, 3]  # rank 1 wrote nothing of its own
    for ra, rb in zip(a, b):
        for key in ("loss", "loss_ce", "loss_mask", "loss_dice"):
            np.testing.assert_allclose(rb[key], ra[key], rtol=1e-5, err_msg=f"iteration {ra['iter']} {key}")
    # The gradients were averaged the same way: weights after 3 steps agree too.
    wa, wb = load_file(str(one / "head.safetensors")), load_file(str(two / "head.safetensors"))
    for k in wa:
        np.testing.assert_allclose(wb[k].numpy(), wa[k].numpy(), rtol=1e-4, atol=1e-5, err_msg=k)
