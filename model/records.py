"""Checked reading of a run folder's (or a model folder's) files: a JSON record or a safetensors file that is
missing, truncated or undecodable is one RunFileError (ModelFolderError) naming the file and how to get a usable
head back, never a traceback or a silent fallback to other weights."""
from __future__ import annotations

import json
from pathlib import Path

from hairdiff.core.errors import HairdiffError, RunFileError


def read_run_record(path: Path, fix: str, error: type[HairdiffError] = RunFileError) -> dict:
    """A JSON record of a run (run.json, config.json, best/best.json, a checkpoint's state.json) or of a model
    folder (config.json) as a dict: `error` naming the file when it is missing, unreadable, not JSON or not a
    JSON object."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{path} is missing: {fix}") from None
    except OSError as e:
        raise error(f"{path}: cannot read it ({e.strerror or e}): {fix}") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise error(f"{path} is damaged (not JSON: {e}): {fix}") from None
    if not isinstance(record, dict):
        raise error(f"{path} is damaged (a JSON {type(record).__name__}, not a record): {fix}")
    return record


def check_weights(path: Path, fix: str, error: type[HairdiffError] = RunFileError) -> None:
    """`error` naming `path` unless it is a complete safetensors file (its header read and checked to cover the
    file; no tensor is loaded)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            f.keys()
    except FileNotFoundError:
        raise error(f"{path} is missing: {fix}") from None
    except Exception as e:  # SafetensorError: truncated, empty, not safetensors; OSError: unreadable
        raise error(f"{path} is damaged ({str(e)[:120]}): {fix}") from None
