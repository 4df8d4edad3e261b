"""Where stores live: local folders or fsspec URLs (s3://, gs://, file://)."""
from __future__ import annotations

import os

from hairdiff.core.paths import local_cache_dir
from hairdiff.core.urls import filesystem, is_remote


def default_cache_root() -> str:
    """$HAIRDIFF_CACHE (a folder or a URL), else the local cache folder."""
    return os.environ.get("HAIRDIFF_CACHE") or str(local_cache_dir())


def store_url(cache_root: str, dataset: str, split: str, fp: str, data_key: str | None = None) -> str:
    """<root>/<dataset>/<split>/<fingerprint16>[-<data key 12>].zarr: the features' settings and the files'
    content both decide which store is opened."""
    name = f"{fp[:16]}-{data_key[:12]}" if data_key else fp[:16]
    return f"{str(cache_root).rstrip('/')}/{dataset}/{split}/{name}.zarr"


def list_stores(cache_root: str) -> list[str]:
    fs, root = filesystem(cache_root)
    if not fs.exists(root):
        return []
    found = fs.glob(f"{root.rstrip('/')}/*/*/*.zarr")
    proto = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    if is_remote(cache_root):
        return sorted(f"{proto}://{p}" for p in found)
    return sorted(found)
