"""A head whose weights are not all finite is never kept and never used (issue 26).

`nonfinite_count` counts on the device without waiting, so the training loop reads it with the statistics it
reads anyway; `check_finite_to_write` guards every write of a head (checkpoints, RUN/best/, the final head) and
`check_finite_loaded` every head read for scoring or predicting.
"""
from __future__ import annotations

import torch

from hairdiff.core.errors import NonFiniteHeadError, TrainingDiverged


def _tensors(module: torch.nn.Module) -> list[torch.Tensor]:
    """The weights a head's file holds: parameters and floating-point buffers."""
    return [t.detach() for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]


def value_count(module: torch.nn.Module) -> int:
    return sum(t.numel() for t in _tensors(module))


def nonfinite_count(module: torch.nn.Module) -> torch.Tensor:
    """How many of the head's values are NaN or infinite: a float32 scalar on its device (no host wait)."""
    counts = [torch.count_nonzero(~torch.isfinite(t)) for t in _tensors(module)]
    return torch.stack(counts).sum().float() if counts else torch.zeros(())


def check_finite_to_write(module: torch.nn.Module, path) -> None:
    """TrainingDiverged (nothing written) when the head about to be written to `path` is not all finite."""
    bad = int(nonfinite_count(module).item())
    if bad:
        raise TrainingDiverged(f"the head to be written to {path} has {bad:,} non-finite values of "
                               f"{value_count(module):,}: the training diverged, and it is not written. Lower --lr "
                               "(or --weight-decay), then run again")


def check_finite_loaded(module: torch.nn.Module, weights, fix: str) -> None:
    """NonFiniteHeadError naming `weights` (and `fix`) when the head read from it is not all finite."""
    bad = int(nonfinite_count(module).item())
    if bad:
        raise NonFiniteHeadError(f"{weights} holds {bad:,} non-finite values of {value_count(module):,}: the training "
                                 f"that wrote it diverged, so it predicts nothing. {fix}")
