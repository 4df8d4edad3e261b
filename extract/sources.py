"""What identifies a dataset's files: a content digest of every image and label, memoised by (path, size, mtime).

A store is keyed by the data it holds as well as by the feature settings, so two folders with the same
sample ids never share a store, and a copy of the same files elsewhere (another machine, a moved mount)
finds the store again. Content, not paths: a shared cache is read by people whose paths differ.
The memo (a SQLite file in the local cache folder) makes a rerun cost one stat per file; the first run reads
every file once (measured in BENCHMARKS.md: ~0.9 s for Figaro's 748 images and masks, cold).
A file that cannot be read (a link whose target is gone, no permission) is keyed as UNREADABLE: listing
never drops it, and loading it is a bad sample that --on-error handles, named.
"""
from __future__ import annotations

import hashlib
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hairdiff.core.files import file_sha256
from hairdiff.core.paths import local_cache_dir

MEMO = "file-digests.sqlite"
UNREADABLE = "unreadable"  # the digest of a file that cannot be read: its sample fails, named, when loaded


def _sha256(path: str) -> str:
    return file_sha256(path) or UNREADABLE


class DigestMemo:
    """sha256 of files keyed by (resolved path, size, mtime_ns); a changed file gets a new key."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else local_cache_dir() / MEMO
        self.db = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=30)
            self.db.execute("CREATE TABLE IF NOT EXISTS digest (path TEXT, size INTEGER, mtime INTEGER, sha256 TEXT, "
                            "PRIMARY KEY (path, size, mtime))")
        except (OSError, sqlite3.Error):
            self.db = None  # a read-only cache folder only costs re-hashing next time

    def digests(self, paths: list[str], threads: int = 8) -> list[str]:
        keys = []
        for p in paths:
            try:
                st = os.stat(p)
            except OSError:  # a dangling link or a file gone since listing: never memoised
                keys.append((str(Path(p).absolute()), -1, -1))
                continue
            keys.append((str(Path(p).resolve()), st.st_size, st.st_mtime_ns))
        known = {}
        if self.db is not None:
            for k in keys:
                row = self.db.execute("SELECT sha256 FROM digest WHERE path=? AND size=? AND mtime=?", k).fetchone()
                if row:
                    known[k] = row[0]
        todo = [k for k in dict.fromkeys(keys) if k not in known]
        with ThreadPoolExecutor(threads) as ex:
            for k, d in zip(todo, ex.map(lambda k: _sha256(k[0]) if k[1] >= 0 else UNREADABLE, todo)):
                known[k] = d
        keep = [k for k in todo if known[k] != UNREADABLE]  # a file fixed later must be read again
        if self.db is not None and keep:
            try:
                with self.db:
                    self.db.executemany("INSERT OR REPLACE INTO digest VALUES (?, ?, ?, ?)",
                                        [(*k, known[k]) for k in keep])
            except sqlite3.Error:  # a locked or read-only memo only costs reading the files again next time
                pass
        return [known[k] for k in keys]

    def close(self) -> None:
        if self.db is not None:
            self.db.close()


def source_digests(refs, memo: DigestMemo | None = None) -> tuple[str, list[str]]:
    """(the data key: sha256 over each sample's id and the content digests of its image and label files, in store
    order; the content digest of each image file, in the same order). The store keeps the second: what decides
    whether two stores hold one photo (a held-out store must not), whatever their ids, folders or masks."""
    memo = memo or DigestMemo()
    files = [str(r.image_path) for r in refs]
    labels = [str(r.label_path) for r in refs if r.label_path is not None and os.path.lexists(r.label_path)]
    digests = dict(zip(files + labels, memo.digests(files + labels)))
    h = hashlib.sha256()
    for r in refs:
        label = str(r.label_path) if r.label_path is not None else None
        h.update(f"{r.id}\0{digests[str(r.image_path)]}\0{digests.get(label, 'no-label')}\n".encode())
    return h.hexdigest(), [digests[f] for f in files]


def data_key(refs, memo: DigestMemo | None = None) -> str:
    """The data key alone (source_digests)."""
    return source_digests(refs, memo)[0]
