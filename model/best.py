"""RUN/best/: the head with the best validation score so far, which `pipeline eval` and `predict` prefer.

RUN/best/head_NNNNNNNN.safetensors holds the weights of iteration N; RUN/best/best.json says which file,
which iteration, the score and every validation metric, and the head's provenance (`meta`, as run.json
has it). The weights go under a name of their own first and best.json is replaced atomically after them,
so best.json always names a complete file whatever moment a run is killed; the previous best's weights
are removed last.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_model

from hairdiff.core.errors import RunFileError
from hairdiff.core.files import atomic_write_json, replacing
from hairdiff.model.finite import check_finite_to_write
from hairdiff.model.records import check_weights, read_run_record

BEST_DIR = "best"
BEST_JSON = "best.json"
METRIC = "mIoU"  # what "best" means: the paper's headline metric on the validation store
FIX_BEST = ("restore it, or remove RUN/best/ (`pipeline eval` and `pipeline predict` then take the final head, as "
            "--no-best does)")


def read_best(run_dir: Path) -> dict | None:
    """best.json of a run (with `weights` as a full path), or None when the run has no best head. A best.json
    that is damaged, lacks a field, or names weights that are missing or damaged is a RunFileError naming the
    file."""
    path = Path(run_dir) / BEST_DIR / BEST_JSON
    if not os.path.lexists(path):
        return None
    record = read_run_record(path, FIX_BEST)
    missing = [k for k in ("iteration", "metric", "score", "weights", "meta") if k not in record]
    if missing or not isinstance(record["weights"], str):
        raise RunFileError(f"{path} is damaged (it lacks {', '.join(missing) or 'a weights file name'}): {FIX_BEST}")
    weights = path.parent / record["weights"]
    check_weights(weights, f"{path} names it as the best head; {FIX_BEST}")
    return {**record, "weights": str(weights)}


def save_best(run_dir: Path, head: torch.nn.Module, *, iteration: int, metrics: dict, meta: dict) -> dict:
    """Make iteration `iteration`'s head the run's best; returns the new best.json record."""
    folder = Path(run_dir) / BEST_DIR
    name = f"head_{iteration:08d}.safetensors"
    check_finite_to_write(head, folder / name)
    folder.mkdir(parents=True, exist_ok=True)
    with replacing(folder / name, durable=True) as tmp:
        save_model(head, str(tmp))
    record = {"iteration": int(iteration), "metric": METRIC, "score": float(metrics[METRIC]), "weights": name,
              "metrics": metrics, "meta": {**meta, "iteration": int(iteration)}}
    atomic_write_json(folder / BEST_JSON, record, durable=True, sort_keys=True)
    for old in folder.glob("head_*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return record
