"""The feature cache: the only package that touches Zarr. Other models read a store through `open_store`
(cache/reader.py): read-only, verified, as a torch Dataset or dask arrays."""
from hairdiff.cache.fingerprint import SCHEMA_VERSION, fingerprint
from hairdiff.cache.levels import LevelSpec
from hairdiff.cache.location import default_cache_root, list_stores, store_url
from hairdiff.cache.reader import StoreReader, open_store
from hairdiff.cache.store import FeatureStore
from hairdiff.core.errors import CacheError, StoreMismatchError, StoreNotFoundError

__all__ = ["CacheError", "FeatureStore", "LevelSpec", "SCHEMA_VERSION", "StoreMismatchError", "StoreNotFoundError",
           "StoreReader", "default_cache_root", "fingerprint", "list_stores", "open_store", "store_url"]
