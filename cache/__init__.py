"""The feature cache: the only package that touches Zarr."""
from cache.errors import CacheError, StoreMismatchError, StoreNotFoundError
from cache.fingerprint import SCHEMA_VERSION, fingerprint
from cache.levels import LevelSpec
from cache.location import default_cache_root, list_stores, store_url
from cache.store import FeatureStore

__all__ = ["CacheError", "FeatureStore", "LevelSpec", "SCHEMA_VERSION", "StoreMismatchError", "StoreNotFoundError",
           "default_cache_root", "fingerprint", "list_stores", "store_url"]
