"""Whole shards of the feature and mask arrays, encoded in the calling thread, byte for byte as zarr would.

Why not `array[lo:hi] = data`: zarr 3.1's sharded write holds the GIL for about 30 ms per 11 MB image
(it concatenates the chunk buffers, copies each chunk again to append its checksum, and drives every chunk
through its asyncio loop), so writer threads could not run in parallel: two threads gave 1.1 cores on two
(bench/host_pipeline.py). Here the GIL-free work (Blosc, crc32c) dominates and the rest is one join.

The layout is zarr v3's `sharding_indexed` codec as our stores declare it (cache/store.py): one sample per
inner chunk, inner codecs bytes(little endian) -> Blosc -> crc32c, the index (offset, length) uint64 pairs
at the end, encoded bytes -> crc32c. `encodable` says whether an array is laid out that way; anything else
is written by zarr itself. tests/cache/test_shard_codec.py compares the bytes with zarr's for every array
kind the store writes.
"""
from __future__ import annotations

import sys
import time

import crc32c
import numpy as np
import zarr
from numcodecs import Blosc
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec
from zarr.codecs.sharding import ShardingCodecIndexLocation

EMPTY = np.iinfo(np.uint64).max  # an index entry of a chunk the shard does not hold
_SHUFFLE = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE, "bitshuffle": Blosc.BITSHUFFLE}


def _sharding(arr: zarr.Array) -> ShardingCodec | None:
    codecs = arr.metadata.codecs
    return codecs[0] if len(codecs) == 1 and isinstance(codecs[0], ShardingCodec) else None


def encodable(arr: zarr.Array) -> bool:
    """True for arrays sharded along the first axis, one sample per inner chunk, in the store's codecs."""
    s = _sharding(arr)
    if s is None or sys.byteorder != "little":
        return False
    inner, index = [type(c) for c in s.codecs], [type(c) for c in s.index_codecs]
    return (inner == [BytesCodec, BloscCodec, Crc32cCodec] and index == [BytesCodec, Crc32cCodec]
            and s.index_location == ShardingCodecIndexLocation.end and s.chunk_shape[0] == 1
            and tuple(s.chunk_shape[1:]) == tuple(arr.shape[1:]))


def _blosc(arr: zarr.Array) -> Blosc:
    b = _sharding(arr).codecs[1]
    return Blosc(cname=b.cname.name, clevel=b.clevel, shuffle=_SHUFFLE[b.shuffle.name], blocksize=b.blocksize,
                 typesize=b.typesize)


def _with_crc(parts: list, data) -> int:
    """Append `data` and its crc32c (4 bytes, little endian) to parts; returns the bytes appended."""
    parts.append(data)
    parts.append(np.uint32(crc32c.crc32c(data)).tobytes())
    return len(data) + 4


def encode_shard(arr: zarr.Array, data: np.ndarray) -> bytes:
    """The shard file of `data` (the samples of one shard, in order, from its first sample on)."""
    slots = arr.shards[0]
    blosc = _blosc(arr)
    index = np.full((slots, *[1] * (arr.ndim - 1), 2), EMPTY, dtype=np.uint64)
    parts, pos = [], 0
    for j in range(data.shape[0]):  # morton order of a (slots, 1, ..., 1) grid is plain order
        n = _with_crc(parts, blosc.encode(np.ascontiguousarray(data[j], dtype=arr.dtype)))
        index[j, ..., 0], index[j, ..., 1] = pos, n
        pos += n
    _with_crc(parts, index.tobytes())
    return b"".join(parts)


def write_shard(arr: zarr.Array, k: int, data: np.ndarray) -> tuple[float, float]:
    """Write shard k of `arr` whole (the store replaces the file atomically: temporary file + rename).
    Returns the seconds spent encoding and writing, for the stage report."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    t0 = time.perf_counter()
    encoded = encode_shard(arr, data)
    t1 = time.perf_counter()
    sp = arr.store_path
    key = f"{sp.path}/{arr.metadata.encode_chunk_key((k,) + (0,) * (arr.ndim - 1))}".lstrip("/")
    sync(sp.store.set(key, default_buffer_prototype().buffer.from_bytes(encoded)))
    return t1 - t0, time.perf_counter() - t1
