"""Errors about feature stores; each message names the store and the fix."""


class CacheError(Exception):
    """A store problem the user can act on."""


class StoreMismatchError(CacheError):
    """The store at this URL was written with other feature settings or another sample list."""


class StoreNotFoundError(CacheError):
    pass


class SchemaVersionError(CacheError):
    pass


class ReadOnlyStoreError(CacheError):
    pass
