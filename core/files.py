"""Writing a file so that a reader (or a crash) sees the old content or the new, never half of it."""
from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def replacing(path, *, durable: bool = False) -> Iterator[Path]:
    """Yields a temporary sibling of `path` to write (by any code); on success it is renamed over `path`.
    `durable`: fsync the file and its folder too, so the new content survives a power cut (checkpoints,
    weights); reports need only atomicity."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        if durable:
            fsync_path(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        _fsync_dir(path.parent)


def atomic_write(path, data: bytes | str, *, durable: bool = False) -> Path:
    """Write `data` so that a reader sees the old content or the new, never half of it."""
    with replacing(path, durable=durable) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


def atomic_write_json(path, obj, *, durable: bool = False, **dump_kw) -> Path:
    dump_kw.setdefault("indent", 1)
    return atomic_write(path, json.dumps(obj, **dump_kw), durable=durable)


def fsync_path(path) -> None:
    """fsync a file or a folder written by someone else's code (safetensors, shutil)."""
    path = Path(path)
    if path.is_dir():
        _fsync_dir(path)
        return
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def file_sha256(path) -> str | None:
    """sha256 of a file's content, read in blocks (hashlib releases the GIL on them: threads overlap reads and
    hashing); None when it is missing or unreadable."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()
