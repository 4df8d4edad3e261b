"""RUN/trained_images.json: which images a run trained on, per training store, by content digest.

Written when a training starts (and merged on --resume, whose stores are the same): for each store, the ids
of the images it held done then and, where the store keeps them, their files' content digests (records as
cache/distinct.py's `images` makes them). `pipeline eval` compares a store's scored images with these, so
"held out" is decided by the images the head saw, not by what the training store holds later, its ids or
its folder. Runs written before this file are compared through their stores, as before.
"""
from __future__ import annotations

import os
from pathlib import Path

from hairdiff.core.files import atomic_write_json
from hairdiff.model.records import read_run_record

TRAINED_IMAGES = "trained_images.json"
FIX = "remove it: `pipeline eval` then compares with the training stores themselves"


def _merged(old: dict, new: dict) -> dict:
    """One store's record with the images of both (a resumed run on a store that gained done images)."""
    if old.get("digests") is None or new.get("digests") is None:
        ids = list(dict.fromkeys([*old.get("ids", []), *new["ids"]]))
        return {**new, "ids": ids, "digests": None}
    pairs = dict(zip(old.get("ids", []), old["digests"]))
    pairs.update(zip(new["ids"], new["digests"]))
    return {**new, "ids": list(pairs), "digests": list(pairs.values())}


def record_trained_images(run_dir: Path, stores: list[dict]) -> None:
    """Write (or, for a run that has one, merge into) RUN/trained_images.json; stores: images() records."""
    path = Path(run_dir) / TRAINED_IMAGES
    old = read_trained_images(run_dir) or []
    if len(old) == len(stores):
        stores = [_merged(o, n) for o, n in zip(old, stores)]
    atomic_write_json(path, {"stores": stores})


def read_trained_images(run_dir: Path) -> list[dict] | None:
    """The per-store records of RUN/trained_images.json, or None for a run without it (older runs)."""
    path = Path(run_dir) / TRAINED_IMAGES
    if not os.path.lexists(path):
        return None
    record = read_run_record(path, FIX)
    stores = record.get("stores")
    if not isinstance(stores, list) or not all(isinstance(s, dict) and isinstance(s.get("ids"), list)
                                                for s in stores):
        from hairdiff.core.errors import RunFileError

        raise RunFileError(f"{path} is damaged (no list of stores with their image ids): {FIX}")
    return stores
