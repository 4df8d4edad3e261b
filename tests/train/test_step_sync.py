"""A training step does not wait for the device: counted on the CPU, enforced by CUDA's sync debug mode on a GPU.

The step is train.step.TrainStep, exactly what `pipeline train` runs each iteration (batch -> device ->
targets -> head -> batched loss -> backward -> clipping -> AdamW), on a real head and real labels (hair,
background, ignore rows, an image without hair, one wholly ignored).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hairdiff.model.mask2former.batch_criterion import build_batch_criterion
from hairdiff.model.mask2former.head import HeadConfig, Mask2FormerHead
from hairdiff.train.host_syncs import HostSyncCounter
from hairdiff.train.optim import build_optimizer
from hairdiff.train.step import TrainStep
from tests.fixtures.stores import LEVELS, TINY, features_for, hair_label

MAX_SYNCS = 0  # per step, after the first (which may set up optimizer state)


def labels(n: int = 4) -> np.ndarray:
    rng = np.random.default_rng(0)
    out = np.stack([hair_label(rng) for _ in range(n)])
    out[1][out[1] == 1] = 0  # no hair
    out[2] = 255  # nothing to supervise
    return out


def batch(device: str = "cpu") -> dict:
    rng = np.random.default_rng(1)
    lab = labels()
    feats = [features_for(x, rng) for x in lab]
    return {"features": {lv.name: torch.from_numpy(np.stack([f[lv.name] for f in feats])).half() for lv in LEVELS},
            "labels": torch.from_numpy(lab), "global_start": 0}


def make_step(device: str = "cpu", **criterion) -> TrainStep:
    cfg = HeadConfig(**TINY)
    torch.manual_seed(0)
    head = Mask2FormerHead(LEVELS, cfg).to(device)
    crit = build_batch_criterion(cfg, **criterion).to(device)
    return TrainStep(head, head, crit, build_optimizer(head, 1e-3, 0.05), device=device, grad_clip=0.01,
                     global_batch=4, seed=0)


def count(step: TrainStep, iterations: int = 3) -> list[HostSyncCounter]:
    b, out = batch(), []
    for it in range(iterations):
        with HostSyncCounter(keep_stacks=True) as c:
            stats = step(b, it)
        out.append(c)
        assert torch.isfinite(stats).all()
    return out


def test_a_step_calls_nothing_that_waits_for_the_device():
    counters = count(make_step())
    for it, c in enumerate(counters[1:], 1):
        assert c.total <= MAX_SYNCS, f"iteration {it}: {c.total} host-sync calls: {c.report()}"


def test_the_count_sees_a_host_copy_of_the_matching_costs():
    """The counter is not blind: the same step with the costs copied to the host for scipy counts them."""
    c = count(make_step(host_assignment=True), iterations=2)[-1]
    assert c.total > MAX_SYNCS and c.counts["cpu"] >= 1 and c.counts["numpy"] >= 1, c.report()


def test_the_count_sees_per_image_target_building():
    """...and the per-image targets of the reference criterion (a bool() per image and class)."""
    from hairdiff.model.mask2former.targets import semantic_targets

    with HostSyncCounter() as c:
        semantic_targets(torch.from_numpy(labels()))
    assert c.counts["__bool__"] >= 4 * 2 and c.counts["torch.tensor"] >= 4, c.report()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (CPU runs count calls instead)")
def test_a_cuda_step_passes_sync_debug_mode_error():
    step = make_step("cuda")
    b = batch()
    step(b, 0)  # first step: optimizer state, cuDNN/cuBLAS handles, allocator
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for it in range(1, 3):
            stats = step(b, it)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(stats).all()
