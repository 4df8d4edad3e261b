"""Two things a training step does that no loss value shows: new point draws every iteration, and the
gradient the optimizer receives clipped to --grad-clip (Mask2Former's full-model clipping at 0.01).

Both on train.step.TrainStep, the iteration `pipeline train` runs, with a real head and real labels.
"""
from __future__ import annotations

import numpy as np
import torch

from hairdiff.model.mask2former.batch_criterion import build_batch_criterion
from hairdiff.model.mask2former.head import HeadConfig, Mask2FormerHead
from hairdiff.train.optim import build_optimizer
from hairdiff.train.step import TrainStep
from tests.fixtures.stores import LEVELS, TINY, features_for, hair_label


def batch() -> dict:
    rng = np.random.default_rng(2)
    lab = np.stack([hair_label(rng) for _ in range(3)])
    feats = [features_for(x, rng) for x in lab]
    return {"features": {lv.name: torch.from_numpy(np.stack([f[lv.name] for f in feats])).half() for lv in LEVELS},
            "labels": torch.from_numpy(lab), "global_start": 0}


def make_step(optimizer=None, grad_clip: float = 0.01) -> TrainStep:
    torch.manual_seed(0)
    head = Mask2FormerHead(LEVELS, HeadConfig(**TINY))
    opt = optimizer(head) if optimizer else build_optimizer(head, 1e-3, 0.05)
    return TrainStep(head, head, build_batch_criterion(head.cfg), opt, device="cpu", grad_clip=grad_clip,
                     global_batch=3, seed=4)


def test_every_iteration_draws_new_points_and_the_same_iteration_the_same():
    """The step's points come from (seed, iteration): the loss of the same predictions changes with the
    iteration (new points for the matcher, importance sampling and the losses) and repeats for the same one
    (resume and DDP exactness)."""
    step = make_step()
    with torch.no_grad():
        outputs, targets = step.forward(batch())
        losses = [float(step.loss(outputs, targets, it, 0)[0]) for it in (7, 8, 9, 7)]
    assert losses[0] == losses[3]
    assert len(set(losses[:3])) == 3, losses


def test_the_optimizer_receives_the_gradient_clipped_to_grad_clip():
    """With plain SGD at lr 1, a step moves the parameters by exactly the gradient it was handed: its norm is
    --grad-clip (0.01) when the gradient's norm (reported in the log, before clipping) is larger."""
    step = make_step(optimizer=lambda head: torch.optim.SGD(head.parameters(), lr=1.0))
    before = [p.detach().clone() for p in step.params]
    stats = step(batch(), 0)
    moved = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(step.params, before)))
    grad_norm = float(stats[-1])
    assert grad_norm > 0.1  # far above the clip: without clipping the step would be this long
    torch.testing.assert_close(float(moved), 0.01, rtol=1e-4, atol=0)


def test_grad_clip_0_leaves_the_gradient_whole():
    step = make_step(optimizer=lambda head: torch.optim.SGD(head.parameters(), lr=1.0), grad_clip=0)
    before = [p.detach().clone() for p in step.params]
    stats = step(batch(), 0)
    moved = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(step.params, before)))
    torch.testing.assert_close(float(moved), float(stats[-1]), rtol=1e-4, atol=0)
