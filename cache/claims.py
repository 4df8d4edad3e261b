"""Per-shard claims, so two processes filling one store never compute or write the same shard.

A claim is a small JSON object next to the store (``<store>.claims/<k>.json``), created exclusively
(core/claim.py). It is stale, and may be taken over, when its holder's pid is gone on this host, or when it
is older than the lease on another host (the holder of a long shard refreshes nothing: a lease of one hour
comfortably covers one shard). On object stores exclusive creation is best effort (check, write, re-read).
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from typing import Iterator

from hairdiff.core.claim import holder_alive, me, try_claim
from hairdiff.core.urls import filesystem, is_remote, local_path

LEASE_SECONDS = 3600.0


def _claim_path(store_url: str, k: int) -> str:
    return f"{local_path(store_url).rstrip('/')}.claims/{k}.json"


def _try_remote(url: str, mine: dict) -> bool:
    fs, path = filesystem(url)
    if fs.exists(path):
        try:
            info = json.loads(fs.cat_file(path))
        except Exception:  # (any backend or JSON error) a torn or unreadable claim is stale, as a local one
            info = {}
        if info and holder_alive(info, LEASE_SECONDS):
            return False
    fs.pipe_file(path, json.dumps(mine).encode())
    return json.loads(fs.cat_file(path)).get("token") == mine["token"]


@contextmanager
def shard_claim(store_url: str, k: int) -> Iterator[bool]:
    path = _claim_path(store_url, k)
    mine = me()
    remote = is_remote(store_url)
    ok = _try_remote(path, mine) if remote else try_claim(path, mine, LEASE_SECONDS)
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
