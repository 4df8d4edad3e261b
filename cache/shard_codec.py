"""Whole shards of the feature and mask arrays, encoded in the calling thread byte for byte as zarr would,
and samples read back the same way: fetched in one trip through the store, decoded in the calling thread.

Why not `array[lo:hi] = data`: zarr 3.1's sharded write holds the GIL for about 30 ms per 11 MB image
(it concatenates the chunk buffers, copies each chunk again to append its checksum, and drives every chunk
through its asyncio loop), so writer threads could not run in parallel: two threads gave 1.1 cores on two
(bench/host_pipeline.py). Here the GIL-free work (Blosc, crc32c) dominates and the rest is one join.

The layout is zarr v3's `sharding_indexed` codec as our stores declare it (cache/store.py): one sample per
inner chunk, inner codecs bytes(little endian) -> Blosc -> crc32c, the index (offset, length) uint64 pairs
at the end, encoded bytes -> crc32c. `encodable` says whether an array is laid out that way; anything else
is written by zarr itself. tests/cache/test_shard_codec.py compares the bytes with zarr's for every array
kind the store writes.

Reads, for the same reason: zarr 3.1's read of a sharded array holds the GIL for most of its time (one
thread read 67 images/s of `unet` fp16 features at 512, two threads no more). `read_samples` fetches each
shard's index and then each wanted sample's byte range (all requests of a call gathered in one trip through
zarr's store, so object stores get them concurrently), checks each chunk's crc32c and Blosc-decodes it
straight into the output array in the calling thread, where Blosc and crc32c release the GIL: reader
threads then run in parallel. `read_rows` does the same for the small per-sample arrays (done flags,
digests, sizes: regular chunks of bytes + crc32c). A missing shard or chunk reads as the fill value, as
zarr reads it (the store's per-sample digests turn that into an error for a sample flagged done).
"""
from __future__ import annotations

import asyncio
import sys
import time

import crc32c
import numpy as np
import zarr
from numcodecs import Blosc
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec
from zarr.abc.store import RangeByteRequest, SuffixByteRequest
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


# ---------------------------------------------------------------------------------------------------- reads
class ChunkError(Exception):
    """Stored bytes that do not decode (bad checksum, truncated, undecodable); `sample`: the first sample hit."""

    def __init__(self, sample: int, what: str):
        super().__init__(what)
        self.sample = int(sample)


def _key(arr: zarr.Array, k: int) -> str:
    return f"{arr.store_path.path}/{arr.metadata.encode_chunk_key((k,) + (0,) * (arr.ndim - 1))}".lstrip("/")


def _fetch(coro):
    """Run a coroutine of store requests on zarr's event loop (the loop its stores are bound to)."""
    from zarr.core.sync import sync

    return sync(coro)


def _checked(buf, sample: int, what: str) -> np.ndarray:
    """The payload of `data + crc32c(data)` bytes (uint8, no copy), or ChunkError."""
    b = buf.as_numpy_array()
    if len(b) < 4 or crc32c.crc32c(b[:-4]) != int.from_bytes(b[-4:].tobytes(), "little"):
        raise ChunkError(sample, f"{what}: checksum mismatch")
    return b[:-4]


async def _shard_chunks(store, keys: dict, wanted: dict, slots: int) -> dict:
    """{sample: chunk bytes} of the wanted samples: every shard index first, then every chunk, each stage
    one gather. Samples without a shard file or without an index entry are left out (fill value)."""
    from zarr.core.buffer import default_buffer_prototype

    proto = default_buffer_prototype()
    size = slots * 16 + 4
    heads = await asyncio.gather(*(store.get(key, proto, SuffixByteRequest(size)) for key in keys.values()))
    requests = []
    for (k, key), head in zip(keys.items(), heads):
        if head is None:
            continue
        first = k * slots + int(wanted[k][0])
        if len(head) != size:
            raise ChunkError(first, f"shard index of {key}: {len(head)} bytes, {size} expected")
        index = np.frombuffer(_checked(head, first, f"shard index of {key}").tobytes(), "<u8").reshape(slots, 2)
        for j in wanted[k]:
            offset, length = (int(v) for v in index[j])
            if offset != EMPTY:
                requests.append((k * slots + int(j), key, RangeByteRequest(offset, offset + length)))
    chunks = await asyncio.gather(*(store.get(key, proto, r) for _, key, r in requests))
    return {i: c for (i, _, _), c in zip(requests, chunks)}


def _first_positions(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique values, the position of one occurrence of each in idx, and each position's unique number."""
    uniq, where = np.unique(idx, return_inverse=True)
    first = np.empty(len(uniq), np.int64)
    first[where] = np.arange(len(idx))
    return uniq, first, where


def read_samples(arr: zarr.Array, idx) -> np.ndarray:
    """Samples `idx` (any order, repeats allowed) of an `encodable` array, decoded in the calling thread."""
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    slots = arr.shards[0]
    out = np.empty((len(idx), *arr.shape[1:]), dtype=arr.dtype)
    if not len(idx):
        return out
    uniq, first, where = _first_positions(idx)
    wanted = {int(k): uniq[uniq // slots == k] % slots for k in np.unique(uniq // slots)}
    chunks = _fetch(_shard_chunks(arr.store_path.store, {k: _key(arr, k) for k in wanted}, wanted, slots))
    blosc = _blosc(arr)
    for u, p in zip(uniq, first):
        buf = chunks.get(int(u))
        if buf is None:
            out[p] = arr.metadata.fill_value
            continue
        data = _checked(buf, u, f"chunk of sample {u}")
        try:
            blosc.decode(data, out=out[p])  # Blosc writes into the batch itself, outside the GIL
        except Exception as e:
            raise ChunkError(u, f"chunk of sample {u}: {type(e).__name__}: {e}") from None
    dup = first[where] != np.arange(len(idx))
    out[dup] = out[first[where[dup]]]
    return out


def rows_readable(arr: zarr.Array) -> bool:
    """True for unsharded arrays of fixed-size values chunked along the first axis only, bytes + crc32c."""
    codecs = arr.metadata.codecs
    return (sys.byteorder == "little" and [type(c) for c in codecs] == [BytesCodec, Crc32cCodec]
            and arr.dtype.kind in "biuf" and tuple(arr.chunks[1:]) == tuple(arr.shape[1:]))


async def _get_all(store, keys: list[str]) -> list:
    from zarr.core.buffer import default_buffer_prototype

    proto = default_buffer_prototype()
    return await asyncio.gather(*(store.get(key, proto) for key in keys))


def read_rows(arr: zarr.Array, idx) -> np.ndarray:
    """Rows `idx` (any order, repeats allowed) of a `rows_readable` array: each chunk fetched once."""
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    s = arr.chunks[0]
    out = np.empty((len(idx), *arr.shape[1:]), dtype=arr.dtype)
    ks = np.unique(idx // s)
    bufs = _fetch(_get_all(arr.store_path.store, [_key(arr, int(k)) for k in ks]))
    nbytes = int(np.prod(arr.chunks)) * arr.dtype.itemsize
    for k, buf in zip(ks, bufs):
        sel = np.flatnonzero(idx // s == k)
        if buf is None:
            out[sel] = arr.metadata.fill_value
            continue
        first = int(idx[sel[0]])
        data = _checked(buf, first, f"chunk {k}")
        if len(data) != nbytes:
            raise ChunkError(first, f"chunk {k}: {len(data)} bytes, {nbytes} expected")
        out[sel] = data.view(arr.dtype).reshape(arr.chunks)[idx[sel] - k * s]
    return out
