"""Compression and checksums of stored arrays.

Choice by measurement (bench/cache_codecs.py, BENCHMARKS.md), on float16 features of the SD 1.x
architecture at 512 (random weights, 3 Figaro images, 11.14 MB raw per image): Blosc zstd-3 with
bit-shuffle gives 9.39 MB/image at ~290 MB/s encode and ~1.7 GB/s decode per core; plain zstd (any
level) 10.19 MB; Blosc lz4 bit-shuffle 9.57 MB (faster encode, 1.3 GB/s); Blosc zstd-9 9.08 MB but
8 MB/s encode. Features are written once and read every epoch, so the smallest store with the fastest
decode wins: Blosc zstd-3 bit-shuffle. Every chunk (and every shard index) carries a crc32c checksum so
corruption is detected on read.
"""
from __future__ import annotations

from zarr.codecs import BloscCodec, Crc32cCodec


def feature_compressors():
    return [BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"), Crc32cCodec()]


def small_compressors():
    return [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"), Crc32cCodec()]


def checksum_only():
    return [Crc32cCodec()]
