"""Per-shard claims, so two processes filling one store never compute or write the same shard.

A claim is a small JSON object next to the store (``<store>.claims/<k>.json``), created exclusively. It is
stale, and may be taken over, when its holder's pid is gone on this host, or when it is older than the
lease on another host (the holder of a long shard refreshes nothing: a lease of one hour comfortably
covers one shard). On object stores exclusive creation is best effort (check, write, re-read).
"""
from __future__ import annotations

import json
import os
import socket
import time
import uuid
from contextlib import contextmanager
from typing import Iterator

from hairdiff.core.urls import filesystem, is_remote, local_path

LEASE_SECONDS = 3600.0


def _claim_path(store_url: str, k: int) -> str:
    return f"{local_path(store_url).rstrip('/')}.claims/{k}.json"


def _alive(info: dict) -> bool:
    if time.time() - info.get("time", 0) > LEASE_SECONDS:
        return False
    if info.get("host") == socket.gethostname():
        try:
            os.kill(int(info["pid"]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return True


def _try_local(path: str, me: dict) -> bool:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                with open(path) as f:
                    info = json.load(f)
            except (OSError, ValueError):
                info = {}  # torn claim from a killed writer: stale
            if info and _alive(info):
                return False
            # Stale: remove it by renaming first so two takers cannot both delete-and-create.
            grave = f"{path}.{uuid.uuid4().hex}.stale"
            try:
                os.rename(path, grave)
                os.unlink(grave)
            except FileNotFoundError:  # another taker renamed it first: try to create ours again
                pass
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return True
    return False


def _try_remote(url: str, me: dict) -> bool:
    fs, path = filesystem(url)
    if fs.exists(path):
        try:
            info = json.loads(fs.cat_file(path))
        except Exception:  # (any backend or JSON error) a torn or unreadable claim is stale, as a local one
            info = {}
        if info and _alive(info):
            return False
    fs.pipe_file(path, json.dumps(me).encode())
    return json.loads(fs.cat_file(path)).get("token") == me["token"]


@contextmanager
def shard_claim(store_url: str, k: int) -> Iterator[bool]:
    path = _claim_path(store_url, k)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(), "token": uuid.uuid4().hex}
    remote = is_remote(store_url)
    ok = _try_remote(path, me) if remote else _try_local(path, me)
    try:
        yield ok
    finally:
        if ok:
            try:
                if remote:
                    fs, p = filesystem(path)
                    fs.rm_file(p)
                else:
                    os.unlink(path)
            except (FileNotFoundError, OSError):  # gone or unremovable: a claim outlives its lease, then is stale
                pass
