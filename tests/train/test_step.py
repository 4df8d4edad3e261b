"""The training step's device-side statistics and the loop around them: --log-every changes when the
statistics are read, never what is logged; a divergence found at a read names its first iteration and no
checkpoint holds what it produced; channels-last is a layout, not a different computation."""
from __future__ import annotations

import math

import pytest
import torch

from hairdiff.cache.levels import LevelSpec
from hairdiff.core.errors import TrainingDiverged
from hairdiff.model.checkpoints import latest_checkpoint
from hairdiff.model.mask2former.batch_criterion import build_batch_criterion
from hairdiff.model.mask2former.head import HeadConfig, Mask2FormerHead
from hairdiff.train.loop import train
from hairdiff.train.optim import build_optimizer
from hairdiff.train.step import StepLog, TrainStep, first_divergence
from tests.fixtures.stores import TINY, log_rows, toy_train_config
from tests.fixtures.stores import make_train_store as make_store

VOLATILE = {"time", "images_per_s", "data_wait_s"}


def test_log_every_changes_when_statistics_are_read_not_what_is_logged(tmp_path):
    store = make_store(tmp_path, n=8)
    runs = {}
    for every in (1, 3, 7):
        run = tmp_path / f"every{every}"
        train(toy_train_config(store, run, iters=7, batch_size=2, lr=1e-3, seed=2, ckpt_every=5, log_every=every),
              device="cpu")
        runs[every] = log_rows(run)
    assert [r["iter"] for r in runs[3]] == list(range(1, 8))
    strip = lambda rows: [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]  # noqa: E731
    assert strip(runs[1]) == strip(runs[3]) == strip(runs[7])
    # images/s is the mean of the interval a row was read in: reads at 3, 5 (checkpoint), 6, 7 (the end).
    ips = [r["images_per_s"] for r in runs[3]]
    assert ips[0] == ips[1] == ips[2] and ips[3] == ips[4] and len(set(ips)) >= 3


def test_a_divergence_found_at_a_read_names_its_iteration_and_saves_nothing_after_it(tmp_path):
    from hairdiff.train.data import Position, global_batch

    bad = 1  # first met at iteration 6: after the checkpoint at 4, before the read at 8
    store = make_store(tmp_path, n=12, bad=(bad,))
    pos, k = Position(), 0
    while True:  # the first iteration whose batch holds the inf sample
        batch, pos = global_batch(12, 2, seed=0, pos=pos)
        k += 1
        if bad in batch:
            break
    run = tmp_path / "run"
    # Reads only at the end and at checkpoints (every 4): the bad iteration is found late, but found.
    cfg = toy_train_config(store, run, iters=12, batch_size=2, ckpt_every=4, log_every=12)
    with pytest.raises(TrainingDiverged, match=f"non-finite loss at iteration {k} ") as e:
        train(cfg, device="cpu")
    good = (k - 1) // 4 * 4  # the last checkpoint read before the bad iteration
    assert good == 4 and f"iter_{good:08d}" in str(e.value)
    assert [r["iter"] for r in log_rows(run)] == list(range(1, k))
    ckpt = latest_checkpoint(run)
    assert ckpt.name == f"iter_{good:08d}"  # not iter_00000008: its weights came after the divergence


def test_step_log_reads_in_order_and_grows():
    log = StepLog(["loss", "grad_norm"], capacity=2, device="cpu")
    for i in range(5):
        log.record(torch.tensor([float(i), 10.0 + i]))
    rows = log.read()
    assert [r["loss"] for r in rows] == [0, 1, 2, 3, 4] and rows[4]["grad_norm"] == 14
    assert log.read() == []
    assert first_divergence(rows) is None
    assert first_divergence([{"loss": 1.0, "grad_norm": 1.0}, {"loss": 1.0, "grad_norm": math.inf},
                             {"loss": math.nan, "grad_norm": 1.0}]) == (1, "gradient norm")
    assert first_divergence([{"loss": 1.0, "loss_dice_0": math.nan, "grad_norm": math.nan}]) == (0, "loss")


def test_channels_last_is_a_layout_not_another_computation():
    # Finest level at stride 8: one learned x2 stage, which channels-last changes the memory layout of.
    levels = [LevelSpec("a", 16, 6, 2, 2), LevelSpec("b", 8, 6, 4, 4)]
    cfg = HeadConfig(**TINY)
    g = torch.Generator().manual_seed(0)
    batch = {"features": {lv.name: torch.randn(2, lv.channels, lv.height, lv.width, generator=g).half()
                          for lv in levels},
             "labels": (torch.rand(2, 32, 32, generator=g) > 0.5).to(torch.uint8), "global_start": 0}
    stats = {}
    for layout in (False, True):
        torch.manual_seed(0)
        head = Mask2FormerHead(levels, cfg)
        assert len(head.pixel_decoder.mask_upsample) == 1
        step = TrainStep(head, head, build_batch_criterion(cfg), build_optimizer(head, 1e-3, 0.05), device="cpu",
                         grad_clip=0.01, global_batch=2, seed=0, channels_last=layout)
        stats[layout] = torch.stack([step(batch, it) for it in range(3)])
    torch.testing.assert_close(stats[True], stats[False], rtol=1e-4, atol=1e-6)
