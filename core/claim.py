"""Exclusive claim files: one process at a time holds a thing (a store's shard, a run folder).

A claim is a small JSON file ({host, pid, time, token}) created exclusively. It is stale, and may be taken
over, when its holder's pid is gone on this host, or when its time is older than the lease (a holder on
another host cannot be asked; a long holder refreshes its time). A file cut short by a kill is stale too.
"""
from __future__ import annotations

import json
import os
import socket
import time
import uuid


def me() -> dict:
    """This process as a claim names it."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(), "token": uuid.uuid4().hex}


def holder_alive(info: dict, lease: float) -> bool:
    """Whether the process a claim names may still hold it."""
    if time.time() - info.get("time", 0) > lease:
        return False
    if info.get("host") == socket.gethostname():
        try:
            os.kill(int(info["pid"]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return True


def read_claim(path: str) -> dict:
    """The claim at `path` ({} for a torn or unreadable one)."""
    try:
        with open(path) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def try_claim(path: str, mine: dict, lease: float) -> bool:
    """Create the claim file `path` for `mine`; False while a live holder has it. A stale claim is taken over."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            info = read_claim(path)
            if info and holder_alive(info, lease):
                return False
            # Stale: remove it by renaming first so two takers cannot both delete-and-create.
            grave = f"{path}.{uuid.uuid4().hex}.stale"
            try:
                os.rename(path, grave)
                os.unlink(grave)
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(mine, f)
        return True
    return False
