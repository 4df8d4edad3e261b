"""Checkpoints and final weights without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is a directory RUN/checkpoints/iter_NNNNNNNN/ holding
  model.safetensors      head weights
  optimizer.safetensors  optimizer state tensors, keyed "state.<param index>.<name>"
  rng.safetensors        torch CPU (and CUDA) generator states as uint8 tensors
  state.json             iteration, optimizer hyper-parameters and step layout, numpy / python RNG
                         states, data position, run config, and the head's provenance (meta)
It is written into a temporary sibling, fsynced, and renamed into place, so a directory with that name
is always complete: a kill at any moment leaves the previous checkpoint as the latest.
A finished run also has RUN/head.safetensors + RUN/run.json, which is what evaluation loads (or RUN/best/,
the best validated head, see train/validation.py).

Every file a run folder points to is read through `read_run_record` (JSON) and `check_weights`
(safetensors) before it is used: one missing, truncated or undecodable is a RunFileError naming the file
and how to get a usable head back, never a traceback or a silent fallback to other weights.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from hairdiff.core.errors import CheckpointError, RunFileError
from hairdiff.core.files import atomic_write_json, fsync_path, replacing

FORMAT = "hairdiff-checkpoint-v1"
CKPT_DIR = "checkpoints"
_NAME = re.compile(r"^iter_(\d{8})$")
META_KEYS = ("fingerprint", "fingerprint_inputs", "levels", "stores", "head_config", "iteration")
# How to get a usable head back when a file of the run is missing or damaged.
FIX_FINAL = ("restore it, or remove RUN/run.json and RUN/head.safetensors and run the same `pipeline train` command "
             "with --resume, which writes them again from the last checkpoint")
FIX_CHECKPOINT = ("remove that checkpoint folder to continue from the one before it, or start the run again with "
                  "--overwrite")


# ------------------------------------------------------------------------------------ checked reading
def read_run_record(path: Path, fix: str) -> dict:
    """A JSON record of a run (run.json, config.json, best/best.json, a checkpoint's state.json) as a dict:
    RunFileError naming the file when it is missing, unreadable, not JSON or not a JSON object."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunFileError(f"{path} is missing: {fix}") from None
    except OSError as e:
        raise RunFileError(f"{path}: cannot read it ({e.strerror or e}): {fix}") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise RunFileError(f"{path} is damaged (not JSON: {e}): {fix}") from None
    if not isinstance(record, dict):
        raise RunFileError(f"{path} is damaged (a JSON {type(record).__name__}, not a record): {fix}")
    return record


def check_weights(path: Path, fix: str) -> None:
    """RunFileError naming `path` unless it is a complete safetensors file (its header read and checked to
    cover the file; no tensor is loaded)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            f.keys()
    except FileNotFoundError:
        raise RunFileError(f"{path} is missing: {fix}") from None
    except Exception as e:  # SafetensorError: truncated, empty, not safetensors; OSError: unreadable
        raise RunFileError(f"{path} is damaged ({str(e)[:120]}): {fix}") from None


def read_run_json(run_dir: Path) -> dict:
    """RUN/run.json of a finished run, checked (see read_run_record)."""
    return read_run_record(Path(run_dir) / "run.json", FIX_FINAL)


def _meta(record: dict, path: Path, fix: str) -> dict:
    """The head's provenance in a run record, with every key loading a head needs."""
    meta = record.get("meta")
    missing = [k for k in META_KEYS if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise RunFileError(f"{path} is damaged (its meta lacks {', '.join(missing)}): {fix}")
    return meta


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model  # DDP wraps the head


# ------------------------------------------------------------------------------------------ optimizer
def _optimizer_split(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"state.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    groups, tuple_keys = [], set()
    for g in sd["param_groups"]:
        row = {}
        for k, v in g.items():
            if isinstance(v, tuple):
                tuple_keys.add(k)
                v = list(v)
            row[k] = v
        groups.append(row)
    return tensors, {"class": type(optimizer).__name__, "param_groups": groups,
                     "tuple_keys": sorted(tuple_keys), "scalar_state": scalars}


def _optimizer_join(tensors: dict, info: dict) -> dict:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = v
    for pid, st in info["scalar_state"].items():
        state.setdefault(int(pid), {}).update(st)
    groups = [{k: (tuple(v) if k in info["tuple_keys"] else v) for k, v in g.items()}
              for g in info["param_groups"]]
    return {"state": state, "param_groups": groups}


# ------------------------------------------------------------------------------------------------ RNG
def capture_rng() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    np_state = np.random.get_state(legacy=False)
    np_json = {"bit_generator": np_state["bit_generator"],
               "state": {"key": np_state["state"]["key"].tolist(), "pos": int(np_state["state"]["pos"])},
               "has_gauss": int(np_state["has_gauss"]), "gauss": float(np_state["gauss"])}
    py = random.getstate()
    return tensors, {"numpy": np_json, "python": [py[0], list(py[1]), py[2]]}


def restore_rng(tensors: dict[str, torch.Tensor], info: dict) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = sorted(k for k in tensors if k.startswith("torch_cuda_"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda][: torch.cuda.device_count()])
    n = info["numpy"]
    np.random.set_state({"bit_generator": n["bit_generator"],
                         "state": {"key": np.asarray(n["state"]["key"], dtype=np.uint32), "pos": n["state"]["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    p = info["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


# ---------------------------------------------------------------------------------------- checkpoints
def checkpoint_dir(run_dir: Path, iteration: int) -> Path:
    return Path(run_dir) / CKPT_DIR / f"iter_{iteration:08d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Every RUN/checkpoints/iter_NNNNNNNN folder, oldest first. Complete or not: a checkpoint folder only
    appears whole (renamed into place), so one that lost a file is damage, said when it is read
    (read_checkpoint_state), never skipped for an older one."""
    root = Path(run_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(run_dir: Path, *, iteration: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    position: dict, config: dict, meta: dict, keep: int = 2) -> Path:
    """Write checkpoint `iteration` atomically; keep the newest `keep` checkpoints. Returns its path."""
    final = checkpoint_dir(run_dir, iteration)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_model(_unwrap(model), str(tmp / "model.safetensors"))
    opt_tensors, opt_info = _optimizer_split(optimizer)
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    rng_tensors, rng_info = capture_rng()
    save_file(rng_tensors, str(tmp / "rng.safetensors"))
    state = {"format": FORMAT, "iteration": int(iteration), "optimizer": opt_info, "rng": rng_info,
             "data_position": position, "config": config, "meta": {**meta, "iteration": int(iteration)}}
    with open(tmp / "state.json", "w") as f:
        json.dump(state, f, indent=1, sort_keys=True)
    for name in ("model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"):
        fsync_path(tmp / name)
    fsync_path(tmp)
    if final.exists():  # the same iteration saved again (a resumed run): replace it whole
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_path(final.parent)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_checkpoint_state(path: Path) -> dict:
    path = Path(path)
    state_path = path / "state.json"
    if not path.is_dir() or not _NAME.match(path.name):
        raise CheckpointError(f"{path} is not a checkpoint; checkpoints live in RUN/{CKPT_DIR}/iter_NNNNNNNN")
    state = read_run_record(state_path, FIX_CHECKPOINT)
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{state_path}: unknown checkpoint format {state.get('format')!r} "
                              f"(expected {FORMAT}); it was written by another version of hairdiff")
    return state


def check_optimizer_format(state: dict, optimizer: torch.optim.Optimizer, path: Path) -> None:
    """CheckpointError unless the checkpoint's optimizer has as many parameter groups as `optimizer`."""
    saved, now = len(state["optimizer"]["param_groups"]), len(optimizer.param_groups)
    if saved != now:
        # Runs before weight decay was split (norms and embeddings: 0) saved one group of all parameters.
        raise CheckpointError(f"{path}: its optimizer state has {saved} parameter group(s), this version trains "
                              f"with {now} (no weight decay on norms and embeddings), so it cannot be resumed: "
                              f"start again with --overwrite, or finish it with the hairdiff that began it")


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    *, restore_random: bool = True, device: str | torch.device = "cpu") -> dict:
    """Load weights (and optimizer state and RNG states) from checkpoint dir `path`; returns state.json."""
    path = Path(path)
    state = read_checkpoint_state(path)
    for name in ("model.safetensors",) + (("optimizer.safetensors",) if optimizer is not None else ()) + (
            ("rng.safetensors",) if restore_random else ()):
        check_weights(path / name, FIX_CHECKPOINT)  # every file first: nothing is half loaded
    missing, unexpected = load_model(_unwrap(model), str(path / "model.safetensors"), strict=False,
                                     device=str(device))
    if missing or unexpected:
        raise CheckpointError(f"{path}/model.safetensors does not fit this head (missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]}); was it trained with another head config?")
    if optimizer is not None:
        info = state["optimizer"]
        if info["class"] != type(optimizer).__name__:
            raise CheckpointError(f"{path}: optimizer {info['class']} != {type(optimizer).__name__}")
        check_optimizer_format(state, optimizer, path)
        saved = [len(g["params"]) for g in info["param_groups"]]
        now = [len(g["params"]) for g in optimizer.param_groups]
        if saved != now:
            raise CheckpointError(f"{path}: its optimizer state holds {saved} parameters per group, this head "
                                  f"{now}; was it trained with another head config?")
        optimizer.load_state_dict(_optimizer_join(load_file(str(path / "optimizer.safetensors")), info))
    if restore_random:
        restore_rng(load_file(str(path / "rng.safetensors")), state["rng"])
    return state


# ---------------------------------------------------------------------------------------- final head
def head_config_to_dict(cfg) -> dict:
    """As JSON holds it (tuples as lists), so a config compares equal to the one read back from a run."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def head_config_from_dict(d: dict):
    """A run's head config; fields it predates take the LEGACY values that rebuild the head it trained."""
    from hairdiff.train.mask2former.head import LEGACY, HeadConfig

    d = {**{k: v for k, v in LEGACY.items() if k not in d}, **d}

    fields = {f.name: f for f in dataclasses.fields(HeadConfig)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise CheckpointError(f"head config has fields {unknown} unknown to this version of train.head.HeadConfig; "
                              f"use the hairdiff version that trained it")
    defaults = HeadConfig()
    # JSON turns tuples into lists; give tuple-valued fields their tuples back.
    kw = {k: (tuple(v) if isinstance(getattr(defaults, k), tuple) and isinstance(v, list) else v)
          for k, v in d.items()}
    return HeadConfig(**kw)


def write_final(run_dir: Path, model: torch.nn.Module, run_json: dict) -> None:
    """RUN/head.safetensors then RUN/run.json (written last: its presence means the run finished)."""
    run_dir = Path(run_dir)
    with replacing(run_dir / "head.safetensors", durable=True) as tmp:
        save_model(_unwrap(model), str(tmp))
    atomic_write_json(run_dir / "run.json", run_json, durable=True, sort_keys=True)


def head_source(run_dir: Path, prefer_best: bool = False) -> dict:
    """Which weights `load_head` takes, checked: {source: best | final | checkpoint, weights, record, iteration,
    meta} (+ score and metric for best); record: the JSON file that names the weights.
    best: RUN/best/ when `prefer_best` and the run validated; final: RUN/head.safetensors + run.json (a run.json
    is written last, so with it the head must be there); checkpoint: the latest checkpoint of a run that did not
    finish. A file that is named but missing or damaged is a RunFileError, never a fallback to other weights."""
    from hairdiff.train.validation import FIX_BEST, read_best

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

    Reads what `head_source` names (or `source`, one of its answers): RUN/best/ (only with prefer_best), else
    RUN/head.safetensors + RUN/run.json, else for an interrupted run the latest checkpoint.
    meta: fingerprint, fingerprint_inputs, levels (list of dicts), stores, head_config, iteration.
    """
    from hairdiff.cache.levels import LevelSpec
    from hairdiff.train.mask2former.head import Mask2FormerHead

    src = source or head_source(run_dir, prefer_best)
    meta, weights = {k: src["meta"][k] for k in META_KEYS}, src["weights"]
    try:
        head = Mask2FormerHead([LevelSpec(**lv) for lv in meta["levels"]], head_config_from_dict(meta["head_config"]))
    except (TypeError, ValueError, KeyError, AttributeError) as e:  # hand-edited levels or head_config
        raise RunFileError(f"{src.get('record', run_dir)} is damaged (its levels or head_config do not build a head: "
                           f"{type(e).__name__}: {e})") from None
    missing, unexpected = load_model(head, weights, strict=False, device=str(device))
    if missing or unexpected:
        raise CheckpointError(f"{weights} does not fit the head described in its run metadata "
                              f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")
    return head.to(device).eval(), meta
