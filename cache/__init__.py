"""The feature cache: the only package that touches Zarr."""
from hairdiff.cache.fingerprint import SCHEMA_VERSION, fingerprint
from hairdiff.cache.levels import LevelSpec
from hairdiff.cache.location import default_cache_root, list_stores, store_url
from hairdiff.cache.store import FeatureStore
from hairdiff.core.errors import CacheError, StoreMismatchError, StoreNotFoundError

__all__ = ["CacheError", "FeatureStore", "LevelSpec", "SCHEMA_VERSION", "StoreMismatchError", "StoreNotFoundError",
           "default_cache_root", "fingerprint", "list_stores", "store_url"]
