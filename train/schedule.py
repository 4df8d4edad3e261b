"""Mask2Former's learning-rate schedule: poly decay with power 0.9, no warm-up.

A pure function of the iteration rather than a stateful scheduler, so a resumed run needs nothing but the
iteration number to continue on exactly the same curve.
"""
from __future__ import annotations

import torch

POLY_POWER = 0.9


def poly_factor(iteration: int, total_iters: int, power: float = POLY_POWER) -> float:
    """(1 - it / total) ** power, the multiplier of the base LR for step `iteration` (0-based)."""
    if total_iters <= 0:
        raise ValueError(f"total iterations must be positive, got {total_iters}")
    return (1.0 - min(iteration, total_iters) / total_iters) ** power


def poly_lr(base_lr: float, iteration: int, total_iters: int, power: float = POLY_POWER) -> float:
    return base_lr * poly_factor(iteration, total_iters, power)


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, iteration: int, total_iters: int) -> float:
    """Set every param group's LR for step `iteration`; returns it."""
    lr = poly_lr(base_lr, iteration, total_iters)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def poly_scheduler(optimizer: torch.optim.Optimizer, total_iters: int,
                   power: float = POLY_POWER) -> torch.optim.lr_scheduler.LambdaLR:
    """The same schedule as a LambdaLR, for code that wants a scheduler object."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: poly_factor(it, total_iters, power))
