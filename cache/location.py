"""Where stores live: local folders or fsspec URLs (s3://, gs://, file://)."""
from __future__ import annotations

import os

from hairdiff.core.paths import local_cache_dir
from hairdiff.core.urls import filesystem, is_remote


def default_cache_root() -> str:
    """$HAIRDIFF_CACHE (a folder or a URL), else the local cache folder."""
    return os.environ.get("HAIRDIFF_CACHE") or str(local_cache_dir())


def store_name(fp: str, data_key: str | None = None) -> str:
    """<fingerprint16>[-<data key 12>].zarr: the features' settings and the files' content both decide which store
    is opened (fp "*": the glob pattern of every store of these files)."""
    return (f"{fp[:16]}-{data_key[:12]}" if data_key else fp[:16]) + ".zarr"


def store_url(cache_root: str, dataset: str, split: str, fp: str, data_key: str | None = None) -> str:
    """<root>/<dataset>/<split>/<store_name>."""
    return f"{str(cache_root).rstrip('/')}/{dataset}/{split}/{store_name(fp, data_key)}"


def list_stores(cache_root: str) -> list[str]:
    """Every <root>/<dataset>/<split>/<name>.zarr, listed folder by folder: the root is a path, never a glob
    pattern (a root may hold [brackets], * or ?). UsageError when the root is a file."""
    from hairdiff.core.errors import UsageError

    fs, root = filesystem(cache_root)
    root = root.rstrip("/")
    if not fs.exists(root):
        return []
    if not fs.isdir(root):
        raise UsageError(f"the cache root {cache_root} is a file, not a folder: pass --cache-root a folder (or fix "
                         "HAIRDIFF_CACHE)")

    def folders(path: str) -> list[str]:
        return [e["name"].rstrip("/") for e in fs.ls(path, detail=True) if e.get("type") == "directory"]

    found = [s for d in folders(root) for split in folders(d) for s in folders(split) if s.endswith(".zarr")]
    proto = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    if is_remote(cache_root):
        return sorted(f"{proto}://{p}" for p in found)
    return sorted(found)
