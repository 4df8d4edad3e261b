"""An output folder bound to the settings that made it.

A command that picks up where an output folder left off (`train --resume`, `reproduce`, `demo`, `sweep`)
binds the folder on its first run: FOLDER/manifest.json records, per command, the settings and inputs that
decide what the folder holds (stores, ids and their digests, limits, splits, the recipe). Every later run
compares what it was started with against the record: equal, it continues; different, it stops before doing
anything with one line naming each difference (old -> new) and the fix, so old results are never reported
as new ones. Keys a command may change between runs (the device, progress, worker counts) are simply not
part of what it binds. A folder that holds a command's results but no record of them (the manifest deleted or
emptied) is refused too, before anything is written: its results cannot be told apart from a new run's, and
binding it afresh would leave old results under new settings.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from hairdiff.core.errors import OutputMismatchError
from hairdiff.core.files import atomic_write_json

MANIFEST = "manifest.json"


def differences(old, new, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, with both values ("key: old -> new"); nested dicts compared by key."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            key = f"{prefix}.{k}" if prefix else str(k)
            if k not in old:
                out.append(f"{key}: (absent) -> {_show(new[k])}")
            elif k not in new:
                out.append(f"{key}: {_show(old[k])} -> (absent)")
            else:
                out += differences(old[k], new[k], key)
        return out
    return [] if _norm(old) == _norm(new) else [f"{prefix or 'settings'}: {_show(old)} -> {_show(new)}"]


def _norm(v):
    return json.loads(json.dumps(v, default=str))  # tuples and lists, paths and strings compare alike


def _show(v) -> str:
    s = json.dumps(_norm(v))
    return s if len(s) <= 60 else s[:57] + "..."


def read(folder: Path) -> dict:
    """The folder's manifest ({command: settings}); {} when there is none. A damaged one is an error."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OutputMismatchError(f"{path}: unreadable ({type(e).__name__}); delete it only if the folder's "
                                  "results may be recomputed, or use another output folder") from None
    if not isinstance(data, dict):
        raise OutputMismatchError(f"{path}: not a manifest (a JSON object of settings); use another output folder")
    return data


def bind(folder: Path, command: str, settings: dict, *, fix: str, outputs: tuple[str, ...] = ()) -> bool:
    """Record `settings` for `command` in FOLDER/manifest.json, or check them against the record.

    Returns True when the folder was bound before (a resumed run), False on the first run. Raises
    OutputMismatchError naming every difference; `fix` says how to start afresh (e.g. "pass another --out").
    `outputs`: the names the command writes in FOLDER; when one of them is there but the record is not, the
    folder is refused (OutputMismatchError, its own fix) rather than bound to settings its results may not
    have been made with.
    """
    folder = Path(folder)
    record = read(folder)
    settings = _norm(settings)
    if command in record:
        diff = differences(record[command], settings)
        if diff:
            raise OutputMismatchError(f"{folder} was made by `{command}` with other settings ({'; '.join(diff)}): "
                                      f"{fix}")
        return True
    found = [name for name in outputs if os.path.lexists(folder / name)]
    if found:
        raise OutputMismatchError(f"{folder} holds results of `{command}` ({', '.join(found)}) but no record of the "
                                  f"settings they were made with ({folder / MANIFEST} lacks it): delete {folder} (or "
                                  f"move it away) to compute them again, or use another output folder")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / MANIFEST, {**record, command: settings}, indent=2, sort_keys=True)
    return False
