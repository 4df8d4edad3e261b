"""Validation during training (`pipeline train --val STORE`): the scorer the CLI hands in.

`train` never imports `evaluate`: the command line builds a `Validation` from evaluate's own scoring code
and passes it to the loop, which calls `score(head)` every `--val-every` iterations and at the end and
logs the returned metrics (as val_<name>) in log.jsonl and curves.png. The best head is kept in RUN/best/
(model/best.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class Validation:
    """url and fingerprint of the validation store (it must share the training stores' fingerprint);
    score(head) -> {metric name: value}, holding at least model.best.METRIC, with the head in eval mode."""

    url: str
    fingerprint: str
    score: Callable[[torch.nn.Module], dict]
