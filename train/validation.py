"""Validation during training (`pipeline train --val STORE`): the scorer the CLI hands in, and RUN/best/.

`train` never imports `evaluate`: the command line builds a `Validation` from evaluate's own scoring code
and passes it to the loop, which calls `score(head)` every `--val-every` iterations and at the end and
logs the returned metrics (as val_<name>) in log.jsonl and curves.png.

RUN/best/ holds the head with the best validation mIoU so far, which `pipeline eval` prefers:
RUN/best/head_NNNNNNNN.safetensors holds the weights of iteration N; RUN/best/best.json says which file,
which iteration, the score and every validation metric, and the head's provenance (`meta`, as run.json
has it). The weights go under a name of their own first and best.json is replaced atomically after them,
so best.json always names a complete file whatever moment a run is killed; the previous best's weights
are removed last.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_model

from hairdiff.core.files import atomic_write_json, replacing

BEST_DIR = "best"
BEST_JSON = "best.json"
METRIC = "mIoU"  # what "best" means: the paper's headline metric on the validation store


@dataclass(frozen=True)
class Validation:
    """url and fingerprint of the validation store (it must share the training stores' fingerprint);
    score(head) -> {metric name: value}, holding at least METRIC, with the head in eval mode."""

    url: str
    fingerprint: str
    score: Callable[[torch.nn.Module], dict]


def read_best(run_dir: Path) -> dict | None:
    """best.json of a run (with `weights` as a full path), or None when the run has no best head."""
    path = Path(run_dir) / BEST_DIR / BEST_JSON
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return {**record, "weights": str(path.parent / record["weights"])}


def save_best(run_dir: Path, head: torch.nn.Module, *, iteration: int, metrics: dict, meta: dict) -> dict:
    """Make iteration `iteration`'s head the run's best; returns the new best.json record."""
    folder = Path(run_dir) / BEST_DIR
    folder.mkdir(parents=True, exist_ok=True)
    name = f"head_{iteration:08d}.safetensors"
    with replacing(folder / name, durable=True) as tmp:
        save_model(head, str(tmp))
    record = {"iteration": int(iteration), "metric": METRIC, "score": float(metrics[METRIC]), "weights": name,
              "metrics": metrics, "meta": {**meta, "iteration": int(iteration)}}
    atomic_write_json(folder / BEST_JSON, record, durable=True, sort_keys=True)
    for old in folder.glob("head_*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return record
