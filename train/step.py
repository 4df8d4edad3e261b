"""One training iteration without host synchronisation, and the statistics it leaves on the device.

`TrainStep(batch, iteration)`: batch -> device (pinned, non-blocking) -> dense targets -> head (bf16
autocast on CUDA) -> batched criterion on one point draw for the global batch -> backward -> gradient
clipping -> AdamW. Nothing in it waits for the device: no `.item()`, `bool()` or `float()` of a device
tensor, no tensor built from Python data on the device, no host copy of the matching costs (the
assignment has a closed form on the device, mask2former/matcher.py). The step returns its statistics
(loss, each loss term, gradient norm) as a device tensor; `StepLog` keeps them on the device and the loop
reads them once per logging interval (`--log-every`) and before every checkpoint and validation, which is
also where divergence (a non-finite loss or gradient norm) is found. tests/train/test_step_sync.py counts
what a step may not do.

Point draws: one generator per iteration, seeded with (seed, iteration), draws the points of the whole
global batch; a process keeps its own samples' rows (global sample index), so resume and DDP see the same
numbers as one uninterrupted process. The loss is normalised over the global batch (Mask2Former's number
of target masks, the class term's weight sum): under DDP `mean` (DistContext.mean, an all-reduce queued on
the device, no host wait) gives each process those denominators, so DDP's averaged gradient is exactly
one process's on the whole batch.

The phases (`forward`, `loss`, `backward`, `update`) are separate methods so bench/head_speed.py can time
them; `__call__` runs them in order.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Callable

import torch

from hairdiff.model.mask2former.batch_criterion import BatchCriterion, term_names
from hairdiff.model.mask2former.point_sampling import step_seed
from hairdiff.model.mask2former.targets import DenseTargets, dense_targets


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device` without waiting: pinned first on CUDA (a copy from pageable memory would
    wait for the device's queued work)."""
    if device.type == "cuda" and t.device.type == "cpu":
        if not t.is_pinned():
            t = t.pin_memory()
        return t.to(device, non_blocking=True)
    return t.to(device)


class TrainStep:
    """The training iteration of `pipeline train` (and of bench/head_speed.py's new step).

    model: the head, or its DDP wrapper; head: the head itself (its parameters are clipped); global_batch:
    the global batch size (the point draws cover it all; batch["global_start"] says where this process's
    samples begin). compile: torch.compile the head's forward and the criterion. channels_last: the head's
    stride-4 part (learned x2 stages, mask projection) in channels-last memory. mean: under DDP, the mean
    over processes of a tensor (train.distributed.DistContext.mean), for the loss's global denominators.
    """

    def __init__(self, model: torch.nn.Module, head: torch.nn.Module, criterion: BatchCriterion,
                 optimizer: torch.optim.Optimizer, *, device, grad_clip: float, global_batch: int, seed: int,
                 compile: bool = False, channels_last: bool = False,
                 mean: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.device = torch.device(device)
        self.head, self.criterion, self.optimizer = head, criterion, optimizer
        self.params = [p for p in head.parameters() if p.requires_grad]
        self.max_norm = grad_clip if grad_clip > 0 else math.inf
        self.global_batch, self.seed, self.mean = global_batch, seed, mean
        self.num_predictions = head.cfg.dec_layers + 1
        self.names = ["loss", *term_names(self.num_predictions), "grad_norm"]
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda"
                         else nullcontext())
        head.pixel_decoder.channels_last = channels_last
        self.model = torch.compile(model) if compile else model
        self.loss_fn = torch.compile(criterion) if compile else criterion

    def forward(self, batch: dict) -> tuple[dict, DenseTargets]:
        feats = {k: to_device(v, self.device).float() for k, v in batch["features"].items()}
        targets = dense_targets(to_device(batch["labels"], self.device), self.criterion.num_classes)
        with self.autocast:
            outputs = self.model(feats)
        return outputs, targets

    def loss(self, outputs: dict, targets: DenseTargets, iteration: int, first: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, terms) of this process's samples, which are global samples first .. first + B - 1."""
        gen = torch.Generator(device=self.device).manual_seed(step_seed(self.seed, iteration))
        b = targets.masks.shape[0]
        draws = self.criterion.draw(gen, self.num_predictions, self.global_batch, self.device).samples(first, first + b)
        return self.loss_fn(outputs, targets, draws, self.mean)

    def backward(self, loss: torch.Tensor) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)  # the norm before clipping

    def update(self) -> None:
        self.optimizer.step()

    def __call__(self, batch: dict, iteration: int) -> torch.Tensor:
        """Run one iteration; returns its statistics (float32, on the device, in `names` order)."""
        outputs, targets = self.forward(batch)
        loss, terms = self.loss(outputs, targets, iteration, batch.get("global_start", 0))
        gnorm = self.backward(loss)
        self.update()
        return torch.cat([loss.detach().float()[None], terms.float(), gnorm.detach().float()[None]])


class StepLog:
    """Per-iteration statistics held on the device until the loop reads them (one host copy per read).

    Under DDP every process keeps its own rows and a read averages them over the processes (one
    all-reduce per read, not per step): the loss of the global batch, as the log reports it. A non-finite
    value on any process is non-finite in the mean, so every process finds a divergence at the same read.
    """

    def __init__(self, names: list[str], capacity: int, device):
        self.names = list(names)
        self.rows = torch.zeros(capacity, len(names), dtype=torch.float32, device=device)
        self.count = 0

    def record(self, stats: torch.Tensor) -> None:
        if self.count == len(self.rows):  # more iterations than one interval holds: grow (a copy on the device)
            self.rows = torch.cat([self.rows, torch.zeros_like(self.rows)])
        self.rows[self.count].copy_(stats)
        self.count += 1

    def read(self, dist=None, also: torch.Tensor | None = None) -> list[dict[str, float]] | tuple[list, float]:
        """The rows recorded since the last read, as {name: value}, and empty the log. Waits for the device.
        also: a device scalar read in the same copy (the head's non-finite count); then (rows, its value)."""
        rows = self.rows[:self.count]
        block = rows.flatten() if also is None else torch.cat([rows.flatten(), also.reshape(1).to(rows)])
        if dist is not None:
            block = dist.mean(block.clone())
        values = block.tolist() if len(block) else []
        width = len(self.names)
        out = [dict(zip(self.names, values[k * width:(k + 1) * width])) for k in range(self.count)]
        self.count = 0
        return out if also is None else (out, values[-1])


def first_divergence(rows: list[dict[str, float]]) -> tuple[int, str] | None:
    """(index of the first row with a non-finite loss or gradient norm, what was non-finite), or None."""
    for i, row in enumerate(rows):
        bad = {k: v for k, v in row.items() if k != "grad_norm" and not math.isfinite(v)}
        if bad:
            return i, "loss"
        if not math.isfinite(row["grad_norm"]):
            return i, "gradient norm"
    return None
