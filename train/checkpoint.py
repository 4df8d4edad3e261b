"""Resumable checkpoints, written by the engine without pickle: tensors in safetensors, the rest in JSON.

A checkpoint is a directory RUN/checkpoints/iter_NNNNNNNN/ (its layout and reading: model/checkpoints.py)
holding
  model.safetensors      head weights
  optimizer.safetensors  optimizer state tensors, keyed "state.<param index>.<name>"
  rng.safetensors        torch CPU (and CUDA) generator states as uint8 tensors
  state.json             iteration, optimizer hyper-parameters and step layout, numpy / python RNG
                         states, data position, run config, and the head's provenance (meta)
It is written into a temporary sibling, fsynced, and renamed into place, so a directory with that name
is always complete: a kill at any moment leaves the previous checkpoint as the latest. The head a run
offers to scoring (final, best, or an unfinished run's checkpoint) is the model room's: model/trained.py.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from hairdiff.core.errors import CheckpointError
from hairdiff.core.files import fsync_path
from hairdiff.model.checkpoints import FIX_CHECKPOINT, FORMAT, checkpoint_dir, list_checkpoints, read_checkpoint_state
from hairdiff.model.finite import check_finite_loaded, check_finite_to_write
from hairdiff.model.records import check_weights
from hairdiff.model.trained import unwrap


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
def save_checkpoint(run_dir: Path, *, iteration: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    position: dict, config: dict, meta: dict, keep: int = 2) -> Path:
    """Write checkpoint `iteration` atomically; keep the newest `keep` checkpoints. Returns its path."""
    final = checkpoint_dir(run_dir, iteration)
    check_finite_to_write(unwrap(model), final)  # a non-finite head is never a checkpoint to go back to
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_model(unwrap(model), str(tmp / "model.safetensors"))
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
    missing, unexpected = load_model(unwrap(model), str(path / "model.safetensors"), strict=False,
                                     device=str(device))
    if missing or unexpected:
        raise CheckpointError(f"{path}/model.safetensors does not fit this head (missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]}); was it trained with another head config?")
    check_finite_loaded(unwrap(model), path / "model.safetensors", f"Remove {path} to resume from the checkpoint "
                        "before it, or pass --overwrite (and a lower --lr) to start again")
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
