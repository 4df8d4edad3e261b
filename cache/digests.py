"""Per-sample checksums written with the data and checked on every read of a sample flagged done.

zarr returns the fill value for a shard or chunk missing from the store, with no error (zarr 3.1); the
chunk checksums (crc32c codec) catch flipped bits but not a deleted file. A crc32c of each sample's stored
bytes, per array, written in the same shard write as the data and before its done flag, catches both:
a read that does not reproduce it is lost data, never zeros passed on as features.
"""
from __future__ import annotations

import crc32c
import numpy as np

SIZES = "sizes"  # the column of orig_sizes + label_sizes


def columns(level_keys: list[str]) -> list[str]:
    return [*level_keys, "masks", "labels", SIZES]


def digest(*arrays) -> int:
    """crc32c over the C-order bytes of the arrays (or bytes) in order."""
    c = 0
    for a in arrays:
        c = crc32c.crc32c(a if isinstance(a, (bytes, bytearray)) else np.ascontiguousarray(a).data, c)
    return c


def size_bytes(orig_size, label_size) -> bytes:
    return np.asarray([*orig_size, *label_size], dtype=np.int32).tobytes()
