"""Data-parallel training: one process per device, started by torchrun (torch.distributed.run).

`pipeline train --nproc K ...` re-launches the train command's module under `torchrun --standalone
--nproc-per-node K`, handing every process the same TrainConfig (as JSON in the environment); each process
then finds RANK/WORLD_SIZE in its environment, joins a gloo (CPU) or nccl (CUDA) group, reads its own
slice of every global batch, and DDP averages the gradients. Only rank 0 writes logs, checkpoints and the
final head.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist

from hairdiff.core.errors import TrainingProcessFailed


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """Mean over ranks (in place for the group, returned for convenience). Does not wait for the device
        itself (nccl queues the reduction on the device): the loss calls it every step (its two denominators),
        the log once per read."""
        if self.active:
            tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
            t /= self.world_size
        return t

    def any(self, flag, device=None):
        """True on every rank when `flag` is true on any rank (so all ranks stop together).

        A bool flag gives a bool (one reduction and one wait: for host-side decisions, never per step); a
        tensor flag gives a tensor, reduced in place on the device (nothing waits).
        """
        if isinstance(flag, torch.Tensor):
            if self.active:
                tdist.all_reduce(flag, op=tdist.ReduceOp.MAX)
            return flag
        if not self.active:
            return flag
        t = torch.full((1,), 1.0 if flag else 0.0, device=device)
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def barrier(self) -> None:
        if self.active:
            tdist.barrier()


def under_launcher() -> bool:
    """Started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_distributed(device: str) -> tuple[DistContext, str]:
    """Join the process group when under torchrun; returns the context and this rank's device."""
    if not under_launcher():
        return DistContext(), device
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if device.startswith("cuda"):
        backend = "nccl"
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    else:
        backend = "gloo"
    if not tdist.is_initialized():
        tdist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistContext(rank, world, local, backend), device


def shutdown_distributed(ctx: DistContext) -> None:
    if ctx.active and tdist.is_initialized():
        tdist.destroy_process_group()


def launch(nproc: int, module: str, env: dict[str, str]) -> None:
    """Run `python -m module` in `nproc` local processes with `env` added. TrainingProcessFailed when one fails
    (each process prints its own error first, as every command does)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(["--standalone", "--nproc-per-node", str(nproc), "--module", module])
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # torchrun's children inherit this process's environment
    try:
        run(args)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        raise TrainingProcessFailed(f"a training process failed (rank {rank} of {nproc}, exit code "
                                    f"{failure.exitcode}): its error is printed above") from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
