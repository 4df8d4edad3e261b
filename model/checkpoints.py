"""Where a run's checkpoints live and how they are read back: RUN/checkpoints/iter_NNNNNNNN/ holding
model.safetensors (head weights), optimizer.safetensors, rng.safetensors and state.json (iteration, run
config, data position, the head's provenance `meta`). The engine writes them (train/checkpoint.py); this
room reads them, because an unfinished run's latest checkpoint is a head `eval` and `predict` can use.

A checkpoint folder only appears whole (written aside, renamed into place), so one that lost a file is
damage, said when it is read, never skipped for an older one.
"""
from __future__ import annotations

import re
from pathlib import Path

from hairdiff.core.errors import CheckpointError
from hairdiff.model.records import read_run_record

FORMAT = "hairdiff-checkpoint-v1"
CKPT_DIR = "checkpoints"
NAME = re.compile(r"^iter_(\d{8})$")
FIX_CHECKPOINT = ("remove that checkpoint folder to continue from the one before it, or start the run again with "
                  "--overwrite")


def checkpoint_dir(run_dir: Path, iteration: int) -> Path:
    return Path(run_dir) / CKPT_DIR / f"iter_{iteration:08d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Every RUN/checkpoints/iter_NNNNNNNN folder, oldest first."""
    root = Path(run_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if NAME.match(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(NAME.match(p.name).group(1)))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def read_checkpoint_state(path: Path) -> dict:
    """A checkpoint's state.json, checked: CheckpointError for a folder that is not a checkpoint or of another
    format, RunFileError for a missing or damaged state.json."""
    path = Path(path)
    state_path = path / "state.json"
    if not path.is_dir() or not NAME.match(path.name):
        raise CheckpointError(f"{path} is not a checkpoint; checkpoints live in RUN/{CKPT_DIR}/iter_NNNNNNNN")
    state = read_run_record(state_path, FIX_CHECKPOINT)
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{state_path}: unknown checkpoint format {state.get('format')!r} "
                              f"(expected {FORMAT}); it was written by another version of hairdiff")
    return state
