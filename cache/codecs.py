"""Compression and checksums of stored arrays, and the named feature codecs of `pipeline extract --codec`.

Chosen by throughput (bench/host_pipeline.py, bench/cache_codecs.py, BENCHMARKS.md). Features are float16
activations that compress little whatever the codec (SD 1.x architecture at 512, random weights, 3 Figaro
images: 11.14 MB raw per image), so the codec's cost is what decides how many host cores an extraction
needs: Blosc lz4-5 with bit-shuffle stores 9.55 MB/image (1.8% more than zstd-3) but encodes 4-5x faster
(1.2-1.4 GB/s per core against 220-340 MB/s) and decodes ~1.5x faster. With it, compress + write keeps up
with an H200's 411 images/s on fewer than 14 cores; with zstd-3 it took ~20. zstd stays available for stores
written once and kept long (`--codec zstd`), and every store written before the choice is zstd.

The codec is a creation setting of a store (recorded in its attrs, shown by `pipeline cache info`), not part
of what its features are: it is not in the fingerprint, and a store is read, verified and written with the
codec its own arrays declare. Every chunk (and every shard index) carries a crc32c checksum, so corruption
is detected on read.
"""
from __future__ import annotations

from dataclasses import dataclass

from zarr.codecs import BloscCodec, Crc32cCodec

from hairdiff.core.errors import UsageError


@dataclass(frozen=True)
class FeatureCodec:
    name: str
    cname: str  # Blosc's inner compressor
    clevel: int
    shuffle: str  # noshuffle | shuffle (bytes) | bitshuffle

    def compressors(self) -> list:
        return [BloscCodec(cname=self.cname, clevel=self.clevel, shuffle=self.shuffle), Crc32cCodec()]


CODECS = {
    "lz4": FeatureCodec("lz4", "lz4", 5, "bitshuffle"),  # the default: fastest to write and to read
    "zstd": FeatureCodec("zstd", "zstd", 3, "bitshuffle"),  # ~2% smaller, 4-5x slower to encode; the default before
}
DEFAULT_CODEC = "lz4"


def check_codec(name: str) -> FeatureCodec:
    if name not in CODECS:
        raise UsageError(f"--codec {name!r}: use {' or '.join(CODECS)} (lz4 is the default; zstd stores ~2% "
                         f"smaller and encodes 4-5x slower)")
    return CODECS[name]


def codec_of(blosc: BloscCodec) -> str:
    """The codec's name for an array's Blosc settings: a CODECS name, or `blosc-<cname>-<clevel>-<shuffle>`."""
    cname, shuffle = getattr(blosc.cname, "value", blosc.cname), getattr(blosc.shuffle, "value", blosc.shuffle)
    for c in CODECS.values():
        if (c.cname, c.clevel, c.shuffle) == (cname, blosc.clevel, shuffle):
            return c.name
    return f"blosc-{cname}-{blosc.clevel}-{shuffle}"


def array_codec(arr) -> str:
    """The codec an array is stored with (inside its sharding codec, if any): see codec_of."""
    from zarr.codecs import ShardingCodec

    codecs = list(arr.metadata.codecs)
    if len(codecs) == 1 and isinstance(codecs[0], ShardingCodec):
        codecs = list(codecs[0].codecs)
    blosc = next((c for c in codecs if isinstance(c, BloscCodec)), None)
    return codec_of(blosc) if blosc is not None else "none"


def feature_compressors(codec: str = DEFAULT_CODEC) -> list:
    return check_codec(codec).compressors()


def small_compressors():
    # masks: long runs of one value, small next to the features; zstd-3 costs ~0.1 ms per 512² mask
    return [BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"), Crc32cCodec()]


def checksum_only():
    return [Crc32cCodec()]
