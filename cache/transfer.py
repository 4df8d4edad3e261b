"""Copy a whole store between local folders and object storage, then verify the copy."""
from __future__ import annotations

from hairdiff.core.errors import StoreMismatchError
from hairdiff.core.urls import filesystem


def _copy(src: str, dest: str) -> None:
    sfs, spath = filesystem(src)
    dfs, dpath = filesystem(dest)
    spath = spath.rstrip("/")
    for f in sfs.find(spath):
        rel = f[len(spath):].lstrip("/")
        target = f"{dpath.rstrip('/')}/{rel}"
        dfs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)  # object stores ignore this; folders need it
        dfs.pipe_file(target, sfs.cat_file(f))


def copy_store(src: str, dest: str) -> dict:
    from hairdiff.cache.store import FeatureStore
    from hairdiff.cache.verify import verify

    source = FeatureStore.open(src)
    dfs, dpath = filesystem(dest)
    if dfs.exists(f"{dpath.rstrip('/')}/zarr.json"):
        other = FeatureStore.open(dest)
        if other.fingerprint != source.fingerprint:
            raise StoreMismatchError(f"{dest} already holds another store (fingerprint {other.fingerprint[:16]}, "
                                     f"not {source.fingerprint[:16]}): choose another destination")
    _copy(src, dest)
    return verify(FeatureStore.open(dest))


def push(store: str, url: str) -> dict:
    return copy_store(store, url)


def pull(url: str, dest_dir: str) -> dict:
    return copy_store(url, dest_dir)
