"""The loss of a global batch split over two real processes (gloo) is the loss of the whole batch in one.

Each process holds half of a mixed batch whose halves differ in their number of target masks (3 against 1)
and of matched queries, so a loss normalised by each process's own counts would differ from the whole
batch's. The processes run the batched criterion with train.distributed.DistContext.mean for the
denominators, as TrainStep does under DDP; their losses are averaged as StepLog averages them, their
gradients as DDP averages them.
"""
from __future__ import annotations

import os
import socket

import numpy as np
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from hairdiff.model.mask2former.batch_criterion import build_batch_criterion
from hairdiff.model.mask2former.head import HeadConfig
from hairdiff.model.mask2former.targets import dense_targets

CFG = HeadConfig(num_points=200)
B, Q, H, L = 4, 6, 8, 3  # global batch, queries, mask logits H x H, supervised predictions


def mixed_labels() -> torch.Tensor:
    """Rank 0's half: both classes, hair only (3 masks); rank 1's: background only, wholly ignored (1 mask)."""
    lab = np.zeros((B, 32, 32), np.uint8)
    lab[0, 8:20, 6:22] = 1
    lab[1] = 1
    lab[3] = 255
    return torch.from_numpy(lab)


def leaves() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [t.requires_grad_(True) for _ in range(L)
            for t in (torch.randn(B, Q, 3, generator=g), 3 * torch.randn(B, Q, H, H, generator=g))]


def outputs(ts: list[torch.Tensor], part: slice) -> dict:
    preds = [{"pred_logits": ts[2 * i][part], "pred_masks": ts[2 * i + 1][part]} for i in range(L)]
    return {**preds[-1], "aux_outputs": preds[:-1]}


def loss_and_grads(rank: int | None, mean=None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The loss of the whole batch (rank None) or of rank's half, and the gradients of every prediction."""
    crit = build_batch_criterion(CFG)
    draws = crit.draw(torch.Generator().manual_seed(5), L, B)
    part = slice(0, B) if rank is None else slice(2 * rank, 2 * rank + 2)
    ts = leaves()
    loss, _ = crit(outputs(ts, part), dense_targets(mixed_labels()[part]), draws.samples(part.start, part.stop), mean)
    return loss.detach(), list(torch.autograd.grad(loss, ts))


def _worker(rank: int, port: int, out: str) -> None:
    from hairdiff.train.distributed import DistContext

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    tdist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        ctx = DistContext(rank, 2, rank, "gloo")
        loss, grads = loss_and_grads(rank, ctx.mean)
        loss = ctx.mean(loss.clone())  # what StepLog.read logs
        grads = [ctx.mean(g) for g in grads]  # what DDP hands the optimizer
        if rank == 0:
            torch.save({"loss": loss, "grads": grads}, out)
    finally:
        tdist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_with_unequal_halves_give_the_whole_batch_loss_and_gradient(tmp_path):
    out = str(tmp_path / "rank0.pt")
    mp.start_processes(_worker, args=(_free_port(), out), nprocs=2, join=True, start_method="spawn")
    got = torch.load(out)
    want_loss, want_grads = loss_and_grads(None)
    torch.testing.assert_close(got["loss"], want_loss, rtol=1e-5, atol=0)
    for g, w in zip(got["grads"], want_grads):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-7)
    # The halves alone (each normalised by its own counts) would not give it: the check can fail.
    own = [loss_and_grads(r)[0] for r in (0, 1)]
    assert not torch.isclose((own[0] + own[1]) / 2, want_loss, rtol=1e-3)
