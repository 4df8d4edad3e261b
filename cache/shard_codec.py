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
import os
import sys
import time
import uuid
from pathlib import Path

import crc32c
import numpy as np
import zarr
from numcodecs import Blosc
from zarr.abc.store import RangeByteRequest, SuffixByteRequest
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


def _shard_parts(arr: zarr.Array, data: np.ndarray) -> list:
    """The shard file of `data` (the samples of one shard, in order, from its first sample on), in pieces."""
    slots = arr.shards[0]
    blosc = _blosc(arr)
    index = np.full((slots, *[1] * (arr.ndim - 1), 2), EMPTY, dtype=np.uint64)
    parts, pos = [], 0
    for j in range(data.shape[0]):  # morton order of a (slots, 1, ..., 1) grid is plain order
        n = _with_crc(parts, blosc.encode(np.ascontiguousarray(data[j], dtype=arr.dtype)))
        index[j, ..., 0], index[j, ..., 1] = pos, n
        pos += n
    _with_crc(parts, index.tobytes())
    return parts


def encode_shard(arr: zarr.Array, data: np.ndarray) -> bytes:
    """The shard file of `data`, as zarr would write it."""
    return b"".join(_shard_parts(arr, data))


def _key(arr: zarr.Array, k: int) -> str:
    return f"{arr.store_path.path}/{arr.metadata.encode_chunk_key((k,) + (0,) * (arr.ndim - 1))}".lstrip("/")


def _write_local(path: Path, parts: list) -> None:
    """A key of a local store written as zarr's LocalStore writes one (a temporary file beside it, then a
    rename over it), from the pieces: no joined copy of the shard, and no trip through zarr's event loop."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{uuid.uuid4().hex}.partial")
    try:
        with open(tmp, "wb") as f:
            f.writelines(parts)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_shard(arr: zarr.Array, k: int, data: np.ndarray) -> tuple[float, float]:
    """Write shard k of `arr` whole (the file is replaced atomically: temporary file + rename; object stores
    replace objects whole). Returns the seconds spent encoding and writing, for the stage report."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    t0 = time.perf_counter()
    parts = _shard_parts(arr, data)
    t1 = time.perf_counter()
    store = arr.store_path.store
    if isinstance(store, zarr.storage.LocalStore):
        _write_local(Path(store.root) / _key(arr, k), parts)
    else:
        sync(store.set(_key(arr, k), default_buffer_prototype().buffer.from_bytes(b"".join(parts))))
    return t1 - t0, time.perf_counter() - t1


# ---------------------------------------------------------------------------------------------------- reads
class ChunkError(Exception):
    """Stored bytes that do not decode (bad checksum, truncated, undecodable): `array`, and `sample`, the first
    wanted sample they hold."""

    def __init__(self, array: str, sample: int, what: str):
        super().__init__(what)
        self.array, self.sample = array, int(sample)


def rows_readable(arr: zarr.Array) -> bool:
    """True for unsharded arrays of fixed-size values chunked along the first axis only, bytes + crc32c."""
    codecs = arr.metadata.codecs
    return (sys.byteorder == "little" and [type(c) for c in codecs] == [BytesCodec, Crc32cCodec]
            and arr.dtype.kind in "biuf" and tuple(arr.chunks[1:]) == tuple(arr.shape[1:]))


def readable(arr: zarr.Array) -> bool:
    """What read_arrays reads: sharded arrays laid out as `encodable` says, and `rows_readable` ones."""
    return encodable(arr) or rows_readable(arr)


def _checked(buf, error) -> np.ndarray:
    """The payload of `data + crc32c(data)` bytes (uint8, no copy); `error()` (a ChunkError) when it fails."""
    b = buf.as_numpy_array()
    if len(b) < 4 or crc32c.crc32c(b[:-4]) != int.from_bytes(b[-4:].tobytes(), "little"):
        raise error("checksum mismatch")
    return b[:-4]


class _Read:
    """One array's part of a read. First fetched: each wanted shard's index (sharded arrays) or each wanted
    chunk whole (row arrays); then, for sharded arrays, each wanted sample's byte range."""

    def __init__(self, name: str, arr: zarr.Array, uniq: np.ndarray):
        self.name, self.arr, self.sharded = name, arr, encodable(arr)
        self.per = arr.shards[0] if self.sharded else arr.chunks[0]  # samples per shard file / per chunk
        ks = np.unique(uniq // self.per)
        self.keys = {int(k): _key(arr, int(k)) for k in ks}
        self.wanted = {int(k): uniq[uniq // self.per == k] for k in ks}  # sample indices, ascending
        self.index_size = self.per * 16 + 4  # (offset, length) uint64 pairs + crc32c
        self.heads: dict[int, object] = {}  # shard -> index bytes, or chunk -> chunk bytes
        self.chunks: dict[int, object] = {}  # sample -> chunk bytes (sharded)

    def error(self, sample, where: str):
        return lambda what: ChunkError(self.name, sample, f"{where}: {what}")

    def first(self) -> list:
        return [(k, key, SuffixByteRequest(self.index_size) if self.sharded else None) for k, key in self.keys.items()]

    def ranges(self) -> list:
        out = []
        for k, head in self.heads.items():
            if head is None:  # no shard file: fill values (the store's digests say whether that is lost data)
                continue
            error = self.error(self.wanted[k][0], f"shard index of {self.keys[k]}")
            if len(head) != self.index_size:
                raise error(f"{len(head)} bytes, {self.index_size} expected")
            index = np.frombuffer(_checked(head, error).tobytes(), "<u8").reshape(self.per, 2)
            for i in self.wanted[k]:
                offset, length = (int(v) for v in index[i - k * self.per])
                if offset != EMPTY:
                    out.append((int(i), self.keys[k], RangeByteRequest(offset, offset + length)))
        return out

    def decode(self, idx: np.ndarray, uniq: np.ndarray, first: np.ndarray, where: np.ndarray) -> np.ndarray:
        """The rows of idx, checked and decoded in this thread (Blosc and crc32c release the GIL)."""
        arr = self.arr
        out = np.empty((len(idx), *arr.shape[1:]), dtype=arr.dtype)
        if self.sharded:
            blosc = _blosc(arr)
            for u, p in zip(uniq, first):
                buf = self.chunks.get(int(u))
                if buf is None:
                    out[p] = arr.metadata.fill_value
                    continue
                data = _checked(buf, self.error(u, f"chunk of sample {u}"))
                try:
                    blosc.decode(data, out=out[p])  # straight into the batch
                except Exception as e:
                    raise self.error(u, f"chunk of sample {u}")(f"{type(e).__name__}: {e}") from None
            dup = first[where] != np.arange(len(idx))
            out[dup] = out[first[where[dup]]]
            return out
        nbytes = int(np.prod(arr.chunks)) * arr.dtype.itemsize
        for k, buf in self.heads.items():
            sel = np.flatnonzero(idx // self.per == k)
            if buf is None:
                out[sel] = arr.metadata.fill_value
                continue
            error = self.error(idx[sel[0]], f"chunk {k}")
            data = _checked(buf, error)
            if len(data) != nbytes:
                raise error(f"{len(data)} bytes, {nbytes} expected")
            out[sel] = data.view(arr.dtype).reshape(arr.chunks)[idx[sel] - k * self.per]
        return out


async def _fetch(reads: list[_Read]) -> None:
    """Every first request of every array in one gather, then every byte range in another."""
    from zarr.core.buffer import default_buffer_prototype

    proto = default_buffer_prototype()
    firsts = [(r, k, key, br) for r in reads for k, key, br in r.first()]
    got = await asyncio.gather(*(r.arr.store_path.store.get(key, proto, br) for r, _, key, br in firsts))
    for (r, k, _, _), buf in zip(firsts, got):
        r.heads[k] = buf
    seconds = [(r, i, key, br) for r in reads if r.sharded for i, key, br in r.ranges()]
    got = await asyncio.gather(*(r.arr.store_path.store.get(key, proto, br) for r, _, key, br in seconds))
    for (r, i, _, _), buf in zip(seconds, got):
        r.chunks[i] = buf


def read_arrays(arrays: dict[str, zarr.Array], idx) -> dict[str, np.ndarray]:
    """Rows `idx` (any order, repeats allowed) of each `readable` array, fetched in one trip through zarr's
    event loop (the loop its stores are bound to), decoded in the calling thread. Missing shards, chunks and
    index entries read as the fill value, as in zarr. ChunkError for stored bytes that do not decode."""
    from zarr.core.sync import sync

    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    uniq, where = np.unique(idx, return_inverse=True)
    first = np.empty(len(uniq), np.int64)
    first[where] = np.arange(len(idx))  # one position of each distinct sample: decoded there, copied to repeats
    reads = [_Read(name, arr, uniq) for name, arr in arrays.items()]
    if len(idx):
        sync(_fetch(reads))
    return {r.name: r.decode(idx, uniq, first, where) for r in reads}
