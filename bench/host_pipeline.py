"""The host side of extraction and training alone, fed real-shape features (no GPU, CPU only).

Measures, through the product's own code: decoding + letterboxing (extract/loading.py, one process);
compress + write of whole shards with 1, 2, ... writer threads (FeatureStore.write_samples, as the writer
pool calls it) for each feature codec (`pipeline extract --codec`), and how many cores the host needs to keep
up with the GPU's FLOP ceiling; the training reader (train/data.py's BatchStream over CachedFeatures, random
batches of 16 as training reads them) with 1, 2, ... reader threads, for the store's read path and for
zarr's own read path (the code before cache/shard_codec.py read samples), with the CPU time per image and a
projection to 8 cores.

    python bench/host_pipeline.py [--seconds 3] [--resolution 512] [--threads 1,2] [--features tiny]

Features (`--features`): `tiny` (default) builds each level from real activations of the tiny model
(extract/tiny.py, random weights) on procedural portraits: every H x W plane of a level is a plane of the
tiny model's taps of that size (or stitched from four smaller ones), from a few images under the 8 flips and
transposes, so values and spatial structure are the network's and no plane repeats within a sample.
`STORE` (a feature store path) takes the planes from that store's samples instead, e.g. one written with the
SD 1.x architecture; `noise`: float16 normal noise (compresses worse than any real features). Compressibility
decides the codec's speed: the table shows the stored bytes per image (`x vs raw`) for each.

Rows are measured side by side: every repeat runs each codec (and each read path) in turn, and each row keeps
its best repeat, so ratios between rows hold on a machine shared with other work; absolute rates need an
idle machine.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from report import checkout_on_path, table, write

checkout_on_path()
from hairdiff.cache import FeatureStore, LevelSpec  # noqa: E402
from hairdiff.cache.codecs import CODECS, DEFAULT_CODEC  # noqa: E402
from hairdiff.cache.store import codec_threads  # noqa: E402

# Per-image geometry of the tap sets at 512 (facts.md: SD 1.x shapes); other resolutions scale spatially.
TAP_SETS = {
    "unet": [(1280, 32), (1280, 16), (640, 8), (320, 8)],
    "odise": [(512, 4), (512, 8), (2560, 64), (1920, 32), (960, 16), (640, 8), (512, 8), (512, 4)],
}
GPU_CEILING_IMG_S = 411.0  # VAE encoder + UNet at 512: 2.0 TFLOP/image at 790 TFLOP/s bf16 (facts.md, H200)
SHARD, BATCH = 16, 16


def levels(tap_set: str, r: int) -> list[LevelSpec]:
    return [LevelSpec(f"{tap_set}.{i}", s, c, r // s, r // s) for i, (c, s) in enumerate(TAP_SETS[tap_set])]


def make_store(path: Path, lvls, r: int, n: int, precision: str, codec: str, shard: int = SHARD) -> FeatureStore:
    return FeatureStore.create_or_open(str(path), fingerprint="b" * 64, fingerprint_inputs={"bench": True},
                                       dataset="bench", split="x", root="/", ids=[str(i) for i in range(n)],
                                       levels=lvls, resolution=r, preprocessing={}, precision=precision,
                                       shard_size=shard, codec=codec)


# ------------------------------------------------------------------------------------------ the features
def _dihedral(planes: np.ndarray) -> list[np.ndarray]:
    """The 8 flips and transposes of square planes (n, h, h): the same statistics, other bytes."""
    out = []
    for p in (planes, planes.transpose(0, 2, 1)):
        out += [p, p[:, ::-1], p[:, :, ::-1], p[:, ::-1, ::-1]]
    return out


def tiny_planes(r: int, images: int = 6) -> list[np.ndarray]:
    """float16 feature maps (C, h, h) of the tiny model's unet and odise taps on procedural portraits."""
    import torch

    from hairdiff.demo.hairlike import make_image
    from hairdiff.extract.config import ExtractConfig
    from hairdiff.extract.loading import to_model_input
    from hairdiff.extract.runner import build_extractor
    from hairdiff.extract.taps import ODISE, UNET

    cfg = ExtractConfig(dataset="folder", root=".", model="tiny", resolution=r, device="cpu",
                        taps=",".join(dict.fromkeys(UNET + ODISE)))
    fx = build_extractor(cfg)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(np.stack([make_image(r, rng)[0] for _ in range(images)]))
    with torch.inference_mode():
        feats = fx(to_model_input(x, torch.device("cpu"), fx.bb.dtype))
    return [m for v in feats.values() for m in v.to(torch.float16).numpy()]


def store_planes(url: str, samples: int = 3) -> list[np.ndarray]:
    s = FeatureStore.open(url)
    done = np.flatnonzero(s.done_mask())[:samples]
    return [np.asarray(f) for i in done for f in s.read_sample(int(i))["features"].values()]


class Planes:
    """A pool of distinct square feature planes by size, from which levels of any shape are drawn."""

    def __init__(self, maps: list[np.ndarray]):
        self.by_size: dict[int, list[np.ndarray]] = {}
        for m in maps:
            if m.shape[1] == m.shape[2]:
                self.by_size.setdefault(m.shape[1], []).extend(_dihedral(np.asarray(m, np.float16)))
        self.by_size = {h: np.concatenate(v) for h, v in self.by_size.items()}

    def pool(self, h: int) -> np.ndarray:
        if h not in self.by_size:
            larger = [k for k in self.by_size if k > h]
            if larger:  # the corners of the next larger planes
                self.by_size[h] = np.ascontiguousarray(self.by_size[min(larger)][:, :h, :h])
            else:  # stitched 2 x 2 from four different planes of half the size
                half = self.pool(h // 2)
                q = half[:len(half) // 4 * 4].reshape(2, 2, -1, h // 2, h // 2)
                self.by_size[h] = np.concatenate([np.concatenate([q[0, 0], q[0, 1]], 2),
                                                  np.concatenate([q[1, 0], q[1, 1]], 2)], 1)
        return self.by_size[h]

    def level(self, lv: LevelSpec, rng: np.random.Generator) -> np.ndarray:
        pool = self.pool(lv.height)
        pick = rng.permutation(max(len(pool), lv.channels))[:lv.channels] % len(pool)
        return pool[pick]


def shard_payload(lvls, r: int, planes: Planes | None, shard: int = SHARD, seed: int = 0):
    rng = np.random.default_rng(seed)
    if planes is None:  # noise
        feats = {lv.name: rng.standard_normal((shard, lv.channels, lv.height, lv.width), dtype=np.float32)
                 .astype(np.float16) for lv in lvls}
    else:
        feats = {lv.name: np.stack([planes.level(lv, rng) for _ in range(shard)]) for lv in lvls}
    yy, xx = np.mgrid[:r, :r]
    masks = np.stack([((yy - r * rng.uniform(.3, .6)) ** 2 + (xx - r / 2) ** 2 < (r / 4) ** 2) for _ in range(shard)])
    masks = masks.astype(np.uint8)  # a hair-like blob: annotations are smooth, and PNG-encode like one
    labels = [m[: r * 3 // 4] for m in masks]
    return feats, masks, labels, np.full((shard, 2), r)


def stored_mb(store: FeatureStore) -> float:
    """Bytes of the feature arrays on disk."""
    return sum(f.stat().st_size for f in Path(store.url, "features").rglob("*") if f.is_file()) / 1e6


# ---------------------------------------------------------------------------------------------- timing
def sustained(threads: int, seconds: float, step) -> tuple[float, float]:
    """(images/s, CPU seconds of this process per image) of `threads` threads each calling step() (which
    returns its image count) for about `seconds`."""
    lock, done, stop = threading.Lock(), [0], time.perf_counter() + seconds

    def worker():
        while time.perf_counter() < stop:
            n = step()
            with lock:
                done[0] += n

    t, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(threads) as ex:
        for f in [ex.submit(worker) for _ in range(threads)]:
            f.result()
    return done[0] / (time.perf_counter() - t), (time.process_time() - cpu) / max(done[0], 1)


def zarr_set_write_shard(arr, k: int, data: np.ndarray) -> tuple[float, float]:
    """cache/shard_codec.write_shard before it wrote local files itself: the joined shard through zarr's
    store.set (its event loop, then LocalStore's temporary file + rename)."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    from hairdiff.cache import shard_codec

    t0 = time.perf_counter()
    encoded = shard_codec.encode_shard(arr, data)
    t1 = time.perf_counter()
    sync(arr.store_path.store.set(shard_codec._key(arr, k), default_buffer_prototype().buffer.from_bytes(encoded)))
    return t1 - t0, time.perf_counter() - t1


def bench_writes(tmp: Path, tap_set: str, precision: str, codec: str, r: int, threads: int, seconds: float,
                 planes, before: bool = False) -> dict:
    """Whole shards written by `threads` threads for about `seconds`: sustained images/s and MB/s.
    before: through the write path before (zarr_set_write_shard)."""
    from hairdiff.cache import shard_codec

    lvls = levels(tap_set, r)
    payload = shard_payload(lvls, r, planes)
    codec_threads(threads)  # as `pipeline extract --writers N` does
    n_shards = 4096
    store = make_store(tmp / f"w-{tap_set}-{precision}-{codec}-{threads}.zarr", lvls, r, n_shards * SHARD,
                       precision, codec)
    shards = iter(range(n_shards))  # next() on an iterator is atomic under the GIL: each shard once

    def write_one() -> int:
        k = next(shards)
        store.write_samples(np.arange(k * SHARD, (k + 1) * SHARD), *payload)
        return SHARD

    saved = shard_codec.write_shard
    shard_codec.write_shard = zarr_set_write_shard if before else saved
    try:
        ips, cpu = sustained(threads, seconds, write_one)
    finally:
        shard_codec.write_shard = saved
    mb = sum(v.nbytes for v in payload[0].values()) / SHARD / 1e6
    stored = stored_mb(store) / (next(shards) * SHARD)  # every shard taken was written
    shutil.rmtree(store.url, ignore_errors=True)
    return {"stage": "compress+write", "tap_set": tap_set, "precision": precision, "codec": codec,
            "path": "zarr set (before)" if before else "pieces", "threads": threads, "images_per_s": ips,
            "mb_per_s": ips * mb, "raw_mb_per_image": mb,
            "stored_mb_per_image": stored, "x_vs_raw": mb / stored if precision == "fp16" else None,
            "cpu_ms_per_image": cpu * 1e3}


class NogilClock:
    """Thread CPU seconds spent inside the reader's calls that release the GIL (Blosc decode, crc32c, and the
    local store's file reads: open, seek and a read of megabytes), by wrapping them for the measurement. The
    rest of the process's CPU time (Python, zarr's event loop) is counted as holding the GIL."""

    def __init__(self):
        self.seconds, self.lock = 0.0, threading.Lock()

    def timed(self, fn):
        def call(*args, **kw):
            t = time.thread_time()
            try:
                return fn(*args, **kw)
            finally:
                with self.lock:
                    self.seconds += time.thread_time() - t
        return call

    def __enter__(self):
        import crc32c

        from hairdiff.cache import shard_codec

        clock = self

        class Blosc(shard_codec.Blosc):
            def decode(self, buf, out=None):
                return clock.timed(super().decode)(buf, out)

        from zarr.storage import _local

        self.saved = (shard_codec.Blosc, crc32c.crc32c, _local._get)
        shard_codec.Blosc, crc32c.crc32c, _local._get = Blosc, self.timed(crc32c.crc32c), self.timed(_local._get)
        return self

    def __exit__(self, *exc):
        import crc32c
        from zarr.storage import _local

        from hairdiff.cache import shard_codec

        shard_codec.Blosc, crc32c.crc32c, _local._get = self.saved


class ZarrReads(FeatureStore):
    """The read path before cache/shard_codec.py read samples: every array through zarr's own reads."""

    def _read(self, names, idx):
        return {n: self._get(n, np.asarray(idx)) for n in names}


def reader_store(tmp: Path, r: int, codec: str, planes, shards: int = 8) -> str:
    lvls = levels("unet", r)
    store = make_store(tmp / f"read-{codec}.zarr", lvls, r, shards * SHARD, "fp16", codec)
    payload = shard_payload(lvls, r, planes)
    for k in range(shards):
        store.write_samples(np.arange(k * SHARD, (k + 1) * SHARD), *payload)
    return store.url


def bench_reader(url: str, codec: str, path: str, threads: int, seconds: float) -> dict:
    """Random batches of 16 through the training reader (BatchStream, `threads` reader threads)."""
    from hairdiff.train.data import BatchStream, CachedFeatures, Position

    store = (ZarrReads if path == "zarr" else FeatureStore).open(url)
    data = CachedFeatures([store], seed=0)
    n = 0
    with NogilClock() as nogil, BatchStream(data, BATCH, seed=0, start=Position(), workers=threads,
                                            prefetch=threads) as stream:
        next(stream)  # the stream is running: time the steady state
        t, cpu, free = time.perf_counter(), time.process_time(), nogil.seconds
        stop = t + seconds
        while time.perf_counter() < stop:
            next(stream)
            n += BATCH
        ips, cpu, free = n / (time.perf_counter() - t), time.process_time() - cpu, nogil.seconds - free
    row = {"stage": "train reader", "tap_set": "unet", "precision": "fp16", "codec": codec,
           "path": "zarr (before)" if path == "zarr" else "shard reads", "threads": threads,
           "images_per_s": ips, "cpu_ms_per_image": cpu / max(n, 1) * 1e3}
    if path != "zarr":  # zarr decodes in its own pool: not measured there
        row["gil_share"] = max(0.0, 1 - free / cpu) if cpu > 0 else None
    return row


def bench_decode(tmp: Path, r: int, seconds: float) -> dict:
    """JPEG decode + letterbox in one process (the work of one DataLoader worker)."""
    from PIL import Image

    from hairdiff.demo.hairlike import make_hairlike_dataset
    from hairdiff.extract.loading import DecodeDataset
    from hairdiff.extract.readers.registry import get_reader

    root = tmp / "jpeg"
    make_hairlike_dataset(root, n=16, size=r, seed=0)
    for p in (root / "images").glob("*.png"):  # JPEG files, as datasets ship them
        Image.open(p).convert("RGB").save(p.with_suffix(".jpg"), quality=92)
        p.unlink()
    reader = get_reader("folder")
    refs = reader.list_samples(root, "all")
    ds = DecodeDataset(reader, refs, range(len(refs)), r)
    n, t, stop = 0, time.perf_counter(), time.perf_counter() + seconds
    while time.perf_counter() < stop:
        ds[n % len(refs)]
        n += 1
    return {"stage": "decode+letterbox", "tap_set": "-", "precision": "-", "threads": 1,
            "images_per_s": n / (time.perf_counter() - t)}


def best_of(rows: list[dict], key: tuple) -> list[dict]:
    """One row per key: the most images/s of its repeats, and the least CPU time per image (with the GIL share
    measured with it); each is the repeat least disturbed by other work on the machine."""
    best: dict = {}
    for r in rows:
        k = tuple(r.get(x) for x in key)
        b = best.setdefault(k, dict(r))
        b["images_per_s"] = max(b["images_per_s"], r["images_per_s"])
        if r.get("cpu_ms_per_image") is not None and r["cpu_ms_per_image"] < b["cpu_ms_per_image"]:
            b["cpu_ms_per_image"], b["gil_share"] = r["cpu_ms_per_image"], r.get("gil_share")
        if "raw_mb_per_image" in b:
            b["mb_per_s"] = b["images_per_s"] * b["raw_mb_per_image"]
    return list(best.values())


def projection(rows: list[dict], cores: int = 8) -> dict:
    """The reader on `cores` cores, projected (not measured) from one thread's CPU time per image c and the
    share s of it that holds the GIL (NogilClock, an upper bound): at most cores / c (CPU-bound) and 1 / (s c)
    (the GIL-held parts of all threads one after another); Amdahl's c (s + (1 - s) / cores) per image, the
    conservative figure, assumes no GIL-held work overlaps another thread's GIL-free work. Beside it, the
    measured scaling from 1 to 2 threads (meaningless when other work holds the cores)."""
    out = {}
    for r1 in rows:
        if r1["threads"] != 1 or r1.get("gil_share") is None or not r1["cpu_ms_per_image"]:
            continue
        r2 = next((r for r in rows if r["threads"] == 2 and r["path"] == r1["path"] and r["codec"] == r1["codec"]),
                  None)
        c, s = r1["cpu_ms_per_image"] / 1e3, r1["gil_share"]
        out[f"{r1['path']}, {r1['codec']}"] = {
            "cpu_ms_per_image": c * 1e3, "gil_share": s,
            "scaling_1_to_2_measured": r2["images_per_s"] / r1["images_per_s"] if r2 else None,
            f"amdahl_images_per_s_{cores}_cores": 1 / (c * (s + (1 - s) / cores)),
            f"bound_images_per_s_{cores}_cores": min(cores / c, 1 / (s * c) if s > 0 else float("inf"))}
    return out


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="measuring time per row and repeat")
    ap.add_argument("--repeats", type=int, default=2, help="side-by-side rounds; each row keeps its best")
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--threads", default=None, help="writer/reader thread counts, e.g. 1,2,4 (default: 1..cores)")
    ap.add_argument("--codecs", default=",".join(CODECS), help=f"feature codecs to compare (of {', '.join(CODECS)})")
    ap.add_argument("--features", default="tiny", help="tiny | noise | STORE (see above)")
    ap.add_argument("--ceiling", type=float, default=GPU_CEILING_IMG_S,
                    help="GPU images/s to keep up with (default: the H200 FLOP ceiling at 512)")
    ap.add_argument("--out", type=Path, default=None, help="folder for host_pipeline.json")
    return ap.parse_args()


def _measure(a, counts: list[int], codecs: list[str]) -> tuple[list, list, list]:
    """(decode row, write rows, read rows): every write and read setting in turn, `a.repeats` rounds."""
    planes = (None if a.features == "noise" else
              Planes(tiny_planes(a.resolution) if a.features == "tiny" else store_planes(a.features)))
    writes, reads = [], []
    with tempfile.TemporaryDirectory(prefix="hairdiff-host-") as d:
        tmp = Path(d)
        decode = bench_decode(tmp, a.resolution, a.seconds)
        urls = {c: reader_store(tmp, a.resolution, c, planes) for c in codecs}
        for _ in range(max(1, a.repeats)):
            for tap_set, precision in (("unet", "fp16"), ("unet", "int8"), ("odise", "fp16"), ("odise", "int8")):
                for c in counts if (tap_set, precision) == ("unet", "fp16") else [counts[-1]]:
                    for codec in codecs:
                        writes.append(bench_writes(tmp, tap_set, precision, codec, a.resolution, c, a.seconds,
                                                   planes))
            if "zstd" in codecs:  # the default before: zstd through the write path before, one thread
                writes.append(bench_writes(tmp, "unet", "fp16", "zstd", a.resolution, counts[0], a.seconds, planes,
                                           before=True))
            for c in counts:
                for codec in codecs:
                    for path in ("store", "zarr"):
                        reads.append(bench_reader(urls[codec], codec, path, c, a.seconds))
    return [decode], best_of(writes, ("tap_set", "precision", "codec", "path", "threads")), \
        best_of(reads, ("codec", "path", "threads"))


def _summary(a, cores, counts, codecs, rows, writes, reads) -> dict:
    def rate(stage, codec, threads, path):
        return next((r["images_per_s"] for r in rows if r["stage"] == stage and r.get("codec") == codec
                     and r["threads"] == threads and r["tap_set"] == "unet" and r["precision"] == "fp16"
                     and r.get("path") == path), None)

    def unet(codec, path="pieces"):
        return next(r for r in writes if r["codec"] == codec and r["threads"] == counts[0] and r["tap_set"] == "unet"
                    and r["precision"] == "fp16" and r["path"] == path)

    default = DEFAULT_CODEC if DEFAULT_CODEC in codecs else codecs[0]
    one, two = rate("compress+write", default, 1, "pieces"), rate("compress+write", default, 2, "pieces")
    return {"cores": cores, "resolution": a.resolution, "ceiling_images_per_s": a.ceiling, "features": a.features,
            "default_codec": DEFAULT_CODEC, "codecs": codecs,
            "write_scaling_1_to_2": two / one if one and two else None,
            # unet fp16 with the fewest writer threads measured (1 by default)
            "cores_for_ceiling": {c: unet(c)["cores_for_ceiling"] for c in codecs},
            "cores_for_ceiling_cpu": {c: unet(c)["cores_for_ceiling_cpu"] for c in codecs},
            "before": ({k: unet("zstd", "zarr set (before)")[k] for k in ("cores_for_ceiling",
                                                                         "cores_for_ceiling_cpu")}
                       if "zstd" in codecs else None),
            "reader_images_per_s": {f"{c}, {p}, {t} threads": rate("train reader", c, t, p)
                                    for c in codecs for p in ("shard reads", "zarr (before)") for t in counts},
            "reader_projection": projection(reads),
            "decode_cores_for_ceiling": a.ceiling / rows[0]["images_per_s"]}


def main() -> None:
    a = _args()
    cores = os.cpu_count() or 1
    counts = [int(x) for x in a.threads.split(",")] if a.threads else sorted({1, 2, *range(4, cores + 1, 4), cores})
    counts = [c for c in counts if c <= cores]
    codecs = a.codecs.split(",")
    rows, writes, reads = _measure(a, counts, codecs)
    rows += writes + reads
    for r in rows:
        r["images_per_s_per_core"] = r["images_per_s"] / r["threads"]
        if r["stage"] == "compress+write":
            r["cores_for_ceiling"] = a.ceiling / r["images_per_s_per_core"]
            # the same from the CPU time each image took (all threads): steadier when other work shares the cores
            r["cores_for_ceiling_cpu"] = a.ceiling * r["cpu_ms_per_image"] / 1e3
    summary = _summary(a, cores, counts, codecs, rows, writes, reads)
    path = write("host_pipeline", rows, summary, a.out or Path(__file__).resolve().parent / "results")
    table(f"host side at {a.resolution}² on {cores} cores (GPU ceiling {a.ceiling:.0f} img/s; {a.features} features; "
          f"best of {a.repeats} side-by-side repeats)", rows, [
              ("stage", "stage", ""), ("taps", "tap_set", ""), ("precision", "precision", ""), ("codec", "codec", ""),
              ("path", "path", ""), ("threads", "threads", "d"), ("img/s", "images_per_s", ".1f"),
              ("MB/s", "mb_per_s", ".0f"), ("x vs raw", "x_vs_raw", ".3f"),
              ("img/s/core", "images_per_s_per_core", ".1f"), ("CPU ms/img", "cpu_ms_per_image", ".1f"),
              ("GIL share", "gil_share", ".2f"),
              ("cores for ceiling", "cores_for_ceiling", ".1f"), ("(from CPU time)", "cores_for_ceiling_cpu", ".1f")])
    for name, p in summary["reader_projection"].items():
        two = p["scaling_1_to_2_measured"]
        print(f"reader, {name}: {p['cpu_ms_per_image']:.1f} CPU ms/image, at most {p['gil_share']:.0%} of it "
              f"holding the GIL; projected on 8 cores (not measured): {p['amdahl_images_per_s_8_cores']:.0f} "
              f"img/s by Amdahl, at most {p['bound_images_per_s_8_cores']:.0f}"
              + (f"; measured 1 -> 2 threads: {two:.2f}x" if two else ""))
    print(path)


if __name__ == "__main__":
    main()
