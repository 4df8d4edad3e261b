"""Copy a whole store between local folders and object storage, then verify the copy.

Where the copy lands: a destination ending in `.zarr` is the store's own path; anything else is a cache
root, and the store takes its usual place there, `<root>/<dataset>/<split>/<fingerprint16>.zarr`, where
`--cache-root` and `pipeline cache ls` find it.
"""
from __future__ import annotations

from hairdiff.cache.distinct import check_distinct
from hairdiff.cache.location import store_url
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


def destination(source, dest: str) -> str:
    """The store path a copy of `source` (a FeatureStore) gets for DEST (see the module docstring)."""
    dest = str(dest)
    if dest.rstrip("/").endswith(".zarr"):
        return dest.rstrip("/")
    # Where `pipeline extract` would put it under that cache root (stores written before data keys: the
    # folder of their --ids selection and the fingerprint alone, as they were named).
    if source.data_key:
        return store_url(dest, source.dataset, source.split, source.fingerprint, source.data_key)
    split = f"{source.split}-ids-{source.ids_digest}" if source.ids_digest else source.split
    return store_url(dest, source.dataset, split, source.fingerprint)


def copy_store(source, dest: str) -> dict:
    """Copy `source` (a FeatureStore) to the store path `dest` and verify the copy; refuses to mix two stores."""
    from hairdiff.cache.store import FeatureStore
    from hairdiff.cache.verify import verify

    dfs, dpath = filesystem(dest)
    if dfs.exists(f"{dpath.rstrip('/')}/zarr.json"):
        other = FeatureStore.open(dest)
        mine = (source.fingerprint, source.dataset, source.split, source.ids_digest, source.data_key)
        if (other.fingerprint, other.dataset, other.split, other.ids_digest, other.data_key) != mine:
            raise StoreMismatchError(f"{dest} already holds another store ({other.dataset}/{other.split}, fingerprint "
                                     f"{other.fingerprint[:16]}; copying {source.dataset}/{source.split}, "
                                     f"{source.fingerprint[:16]}): choose another destination")
    _copy(source.url, dest)
    return verify(FeatureStore.open(dest))


def transfer(src: str, dest: str) -> tuple[str, dict]:
    """`push` and `pull`: (the path the store landed at, the verify report of the copy)."""
    from hairdiff.cache.store import FeatureStore

    source = FeatureStore.open(src)
    target = destination(source, dest)
    check_distinct(copy=(source.url, target))
    return target, copy_store(source, target)
