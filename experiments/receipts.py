"""What a finished result claims, so that reading it back checks the claim instead of trusting the record.

A receipt is written with a result (a sweep point's point.json): the content digest of every file the result
stands for (the run's record and weights, the evaluation's metrics; paths relative to the result's folder, so a
folder moved elsewhere keeps its receipt) and the identity of every store it read (URL, fingerprint, data key).
`problems` answers whether that still holds: a file retrained, rescored, edited or deleted by hand since, or a
store gone or replaced, is named, and the result is computed again rather than reported with its old record.
"""
from __future__ import annotations

from pathlib import Path

from hairdiff.cache import FeatureStore
from hairdiff.core.errors import CacheError
from hairdiff.core.files import file_sha256


def store_identity(url: str) -> dict:
    """What names a store's content: its URL, fingerprint and data key."""
    store = FeatureStore.open(url)
    return {"url": url, "fingerprint": store.fingerprint, "data_key": store.data_key}


def receipt(folder: Path, files: tuple[str, ...], stores: dict[str, str]) -> dict:
    """The receipt of a result in `folder`: digests of `files` (relative to it) and the stores' identities."""
    return {"files": {name: file_sha256(Path(folder) / name) for name in files},
            "stores": {part: store_identity(url) for part, url in stores.items()}}


def problems(folder: Path, record: dict | None) -> list[str]:
    """What no longer holds of a receipt (empty: the result is what it claims); a result without one cannot be
    checked and is one problem."""
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict) \
            or not isinstance(record.get("stores"), dict):
        return ["its record predates receipts (or is damaged), so what it claims cannot be checked"]
    found = []
    for name, digest in record["files"].items():
        now = file_sha256(Path(folder) / name)
        if now is None or now != digest:
            found.append(f"{name} {'is missing' if now is None else 'changed since it was recorded'}")
    for part, was in record["stores"].items():
        url = was.get("url") if isinstance(was, dict) else None
        try:
            now = store_identity(url) if url else None
        except CacheError:
            now = None  # gone, or damaged: extraction names what is wrong with it
        if now is None:
            found.append(f"its {part} store {url} is gone or unreadable")
        elif now != was:
            found.append(f"its {part} store {url} holds other features or data than it recorded")
    return found
