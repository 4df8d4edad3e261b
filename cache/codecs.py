"""Compression and checksums of stored arrays.

Choice by measurement (bench/cache_codecs.py): on float16 UNet feature maps, Blosc with zstd and
bit-shuffle compresses markedly better than plain zstd or lz4 at similar speed, because shuffling
groups the slowly varying exponent bits of neighbouring values; level 3 is where higher levels stop
paying for their encode time. Every chunk (and every shard index) carries a crc32c checksum so
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
