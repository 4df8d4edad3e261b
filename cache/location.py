"""Where stores live: local folders or fsspec URLs (s3://, gs://, file://)."""
from __future__ import annotations

import os
from pathlib import Path


def is_remote(url: str) -> bool:
    return "://" in str(url) and not str(url).startswith("file://")


def default_cache_root() -> str:
    if os.environ.get("HAIRDIFF_CACHE"):
        return os.environ["HAIRDIFF_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "hairdiff")


def store_url(cache_root: str, dataset: str, split: str, fp: str) -> str:
    return f"{str(cache_root).rstrip('/')}/{dataset}/{split}/{fp[:16]}.zarr"


def filesystem(url: str):
    """(fsspec filesystem, path) for any URL; credentials come from the environment, never from us."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(str(url))
    return fs, path


def list_stores(cache_root: str) -> list[str]:
    fs, root = filesystem(cache_root)
    if not fs.exists(root):
        return []
    found = fs.glob(f"{root.rstrip('/')}/*/*/*.zarr")
    proto = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    if is_remote(cache_root):
        return sorted(f"{proto}://{p}" for p in found)
    return sorted(found)
