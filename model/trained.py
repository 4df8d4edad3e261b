"""A run's trained head: its HeadConfig as JSON, the final head's files, which weights a run offers
(`head_source`) and loading them (`load_head`).

A finished run has RUN/head.safetensors + RUN/run.json (written last: its presence means the run
finished); a validated run also RUN/best/ (model/best.py); an unfinished one only checkpoints
(model/checkpoints.py). Each record carries `meta`, the head's provenance: the features' fingerprint and
its inputs (backbone, prompt, timestep, taps, resolution: what `predict` rebuilds the extractor from), the
levels the head reads, the stores it trained on and its HeadConfig.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from hairdiff.cache.levels import LevelSpec
from hairdiff.core.errors import CheckpointError, RunFileError
from hairdiff.core.files import atomic_write_json, replacing
from hairdiff.model.best import FIX_BEST, read_best
from hairdiff.model.checkpoints import FIX_CHECKPOINT, latest_checkpoint, read_checkpoint_state
from hairdiff.model.finite import check_finite_loaded, check_finite_to_write
from hairdiff.model.mask2former.head import LEGACY, HeadConfig, Mask2FormerHead
from hairdiff.model.records import check_weights, read_run_record

META_KEYS = ("fingerprint", "fingerprint_inputs", "levels", "stores", "head_config", "iteration")
# How to get a usable head back when a file of the run is missing or damaged.
FIX_FINAL = ("restore it, or remove RUN/run.json and RUN/head.safetensors and run the same `pipeline train` command "
             "with --resume, which writes them again from the last checkpoint")


# What to do about a head of each source whose weights are not finite (a diverged training).
NONFINITE_FIX = {"best": "Pass --no-best to use the final head, or train again with a lower --lr",
                 "final": "Train again with a lower --lr (`pipeline train --overwrite`), or pass another run",
                 "checkpoint": "Remove that checkpoint to use the one before it, or train again with a lower --lr",
                 "model": "Export the folder again from a run whose head is finite, or download it again"}


def read_run_json(run_dir: Path) -> dict:
    """RUN/run.json of a finished run, checked (model/records.py)."""
    return read_run_record(Path(run_dir) / "run.json", FIX_FINAL)


def _meta(record: dict, path: Path, fix: str) -> dict:
    """The head's provenance in a run record, with every key loading a head needs."""
    meta = record.get("meta")
    missing = [k for k in META_KEYS if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise RunFileError(f"{path} is damaged (its meta lacks {', '.join(missing)}): {fix}")
    return meta


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The head inside a DistributedDataParallel wrapper (or the head itself)."""
    return model.module if hasattr(model, "module") else model


def head_config_to_dict(cfg: HeadConfig) -> dict:
    """As JSON holds it (tuples as lists), so a config compares equal to the one read back from a run."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def head_config_from_dict(d: dict) -> HeadConfig:
    """A run's head config; fields it predates take the LEGACY values that rebuild the head it trained."""
    d = {**{k: v for k, v in LEGACY.items() if k not in d}, **d}
    fields = {f.name for f in dataclasses.fields(HeadConfig)}
    unknown = sorted(set(d) - fields)
    if unknown:
        raise CheckpointError(f"head config has fields {unknown} unknown to this version of HeadConfig; "
                              f"use the hairdiff version that trained it")
    defaults = HeadConfig()
    # JSON turns tuples into lists; give tuple-valued fields their tuples back.
    kw = {k: (tuple(v) if isinstance(getattr(defaults, k), tuple) and isinstance(v, list) else v)
          for k, v in d.items()}
    return HeadConfig(**kw)


def write_final(run_dir: Path, model: torch.nn.Module, run_json: dict) -> None:
    """RUN/head.safetensors then RUN/run.json (written last: its presence means the run finished)."""
    run_dir = Path(run_dir)
    check_finite_to_write(unwrap(model), run_dir / "head.safetensors")
    with replacing(run_dir / "head.safetensors", durable=True) as tmp:
        save_model(unwrap(model), str(tmp))
    atomic_write_json(run_dir / "run.json", run_json, durable=True, sort_keys=True)


def head_source(run_dir: Path, prefer_best: bool = False) -> dict:
    """Which weights `load_head` takes, checked: {source: best | final | checkpoint, weights, record, iteration,
    meta} (+ score and metric for best); record: the JSON file that names the weights.
    best: RUN/best/ when `prefer_best` and the run validated; final: RUN/head.safetensors + run.json (a run.json
    is written last, so with it the head must be there); checkpoint: the latest checkpoint of a run that did not
    finish. A file that is named but missing or damaged is a RunFileError, never a fallback to other weights."""
    run_dir = Path(run_dir)
    best = read_best(run_dir) if prefer_best else None
    if best is not None:
        record = run_dir / "best" / "best.json"
        return {"source": "best", "weights": best["weights"], "record": str(record), "iteration": best["iteration"],
                "meta": _meta(best, record, FIX_BEST), "metric": best["metric"], "score": best["score"]}
    if os.path.lexists(run_dir / "run.json"):
        record = run_dir / "run.json"
        meta = _meta(read_run_json(run_dir), record, FIX_FINAL)
        check_weights(run_dir / "head.safetensors", FIX_FINAL)
        return {"source": "final", "weights": str(run_dir / "head.safetensors"), "record": str(record),
                "iteration": meta.get("iteration"), "meta": meta}
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise CheckpointError(f"{run_dir} holds no trained head (no head.safetensors + run.json and no "
                              f"checkpoint): pass as --run the --out folder of a `pipeline train` run")
    record = ckpt / "state.json"
    meta = _meta(read_checkpoint_state(ckpt), record, FIX_CHECKPOINT)
    check_weights(ckpt / "model.safetensors", FIX_CHECKPOINT)
    return {"source": "checkpoint", "weights": str(ckpt / "model.safetensors"), "record": str(record),
            "iteration": meta.get("iteration"), "meta": meta}


def load_head(run_dir: Path, device: str = "cpu", prefer_best: bool = False, source: dict | None = None):
    """The trained head of a run and its provenance: (Mask2FormerHead in eval mode, meta).

    Reads what `head_source` names (or `source`, one of its answers, or a model folder's: model/portable.py):
    RUN/best/ (only with prefer_best), else RUN/head.safetensors + RUN/run.json, else for an interrupted run the
    latest checkpoint. meta: fingerprint, fingerprint_inputs, levels (list of dicts), stores, head_config,
    iteration. Weights that do not fit the described head are `source["error"]` (CheckpointError) naming both
    files and `source["fix"]`.
    """
    src = source or head_source(run_dir, prefer_best)
    meta, weights = {k: src["meta"][k] for k in META_KEYS}, src["weights"]
    try:
        head = Mask2FormerHead([LevelSpec(**lv) for lv in meta["levels"]], head_config_from_dict(meta["head_config"]))
    except (TypeError, ValueError, KeyError, AttributeError) as e:  # hand-edited levels or head_config
        raise src.get("error", RunFileError)(f"{src.get('record', run_dir)} is damaged (its levels or head_config do "
                                             f"not build a head: {type(e).__name__}: {e})") from None
    record, error = src.get("record", run_dir), src.get("error", CheckpointError)
    fix = src.get("fix", "use the weights and the record the run wrote together")
    try:
        missing, unexpected = load_model(head, weights, strict=False, device=str(device))
    except RuntimeError as e:  # a tensor of another shape: load_state_dict's size mismatch
        if "size mismatch" not in str(e):
            raise  # out of device memory and the like: not the weights' fault
        first = str(e).strip().splitlines()[-1].strip()[:160]
        raise error(f"{weights} does not fit the head described in {record} ({first}): {fix}") from None
    if missing or unexpected:
        raise error(f"{weights} does not fit the head described in {record} (missing {sorted(missing)[:5]}, "
                    f"unexpected {sorted(unexpected)[:5]}): {fix}")
    check_finite_loaded(head, weights, NONFINITE_FIX.get(src.get("source")) or NONFINITE_FIX["final"])
    return head.to(device).eval(), meta


def head_record(source: dict) -> dict:
    """Which head it is, as predictions.json, a model folder's config.json and the command's output say it:
    `head_source`'s answer without the provenance (and without how errors about it are worded)."""
    return {k: v for k, v in source.items() if k not in ("meta", "error", "fix")}
