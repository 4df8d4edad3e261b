"""The host side of extraction alone, fed real-shape features by a stand-in producer (no model, CPU only).

Measures, through the product's own code: decoding + letterboxing (extract/loading.py, one process),
compress + write of whole shards with 1, 2, ... writer threads (FeatureStore.write_samples, as the writer
pool calls it), and the training reader (FeatureStore.read_batch). Then: images/s per core, and how many
cores the host needs to keep up with the GPU's FLOP ceiling for each tap set and stored precision.

    python bench/host_pipeline.py [--seconds 3] [--resolution 512] [--threads 1,2]

Stand-in features are float16 normal noise, which compresses a little worse than real features (ratio 1.06
against 1.19 for the SD 1.x architecture's): the rates are a lower bound for real data.
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
from hairdiff.cache.store import codec_threads  # noqa: E402

# Per-image geometry of the tap sets at 512 (facts.md: SD 1.x shapes); other resolutions scale spatially.
TAP_SETS = {
    "unet": [(1280, 32), (1280, 16), (640, 8), (320, 8)],
    "odise": [(512, 4), (512, 8), (2560, 64), (1920, 32), (960, 16), (640, 8), (512, 8), (512, 4)],
}
GPU_CEILING_IMG_S = 411.0  # VAE encoder + UNet at 512: 2.0 TFLOP/image at 790 TFLOP/s bf16 (facts.md, H200)


def levels(tap_set: str, r: int) -> list[LevelSpec]:
    return [LevelSpec(f"{tap_set}.{i}", s, c, r // s, r // s) for i, (c, s) in enumerate(TAP_SETS[tap_set])]


def make_store(path: Path, lvls, r: int, n: int, precision: str, shard: int = 16) -> FeatureStore:
    return FeatureStore.create_or_open(str(path), fingerprint="b" * 64, fingerprint_inputs={"bench": True},
                                       dataset="bench", split="x", root="/", ids=[str(i) for i in range(n)],
                                       levels=lvls, resolution=r, preprocessing={}, precision=precision,
                                       shard_size=shard)


def shard_payload(lvls, r: int, shard: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    feats = {lv.name: rng.standard_normal((shard, lv.channels, lv.height, lv.width), dtype=np.float32)
             .astype(np.float16) for lv in lvls}
    yy, xx = np.mgrid[:r, :r]
    masks = np.stack([((yy - r * rng.uniform(.3, .6)) ** 2 + (xx - r / 2) ** 2 < (r / 4) ** 2) for _ in range(shard)])
    masks = masks.astype(np.uint8)  # a hair-like blob: annotations are smooth, and PNG-encode like one
    labels = [m[: r * 3 // 4] for m in masks]
    return feats, masks, labels, np.full((shard, 2), r)


def sustained(threads: int, seconds: float, step) -> float:
    """Images per second of `threads` threads each calling step() (which returns its image count) for
    about `seconds`."""
    lock, done, stop = threading.Lock(), [0], time.perf_counter() + seconds

    def worker():
        while time.perf_counter() < stop:
            n = step()
            with lock:
                done[0] += n

    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as ex:
        for f in [ex.submit(worker) for _ in range(threads)]:
            f.result()
    return done[0] / (time.perf_counter() - t)


def bench_writes(tmp: Path, tap_set: str, precision: str, r: int, threads: int, seconds: float) -> dict:
    """Whole shards written by `threads` threads for about `seconds`: sustained images/s and MB/s."""
    lvls, shard = levels(tap_set, r), 16
    payload = shard_payload(lvls, r, shard)
    codec_threads(threads)  # as `pipeline extract --writers N` does
    n_shards = 4096
    store = make_store(tmp / f"w-{tap_set}-{precision}-{threads}.zarr", lvls, r, n_shards * shard, precision, shard)
    shards = iter(range(n_shards))  # next() on an iterator is atomic under the GIL: each shard once

    def write_one() -> int:
        k = next(shards)
        store.write_samples(np.arange(k * shard, (k + 1) * shard), *payload)
        return shard

    ips = sustained(threads, seconds, write_one)
    mb = sum(v.nbytes for v in payload[0].values()) / shard / 1e6
    shutil.rmtree(store.url, ignore_errors=True)
    return {"stage": "compress+write", "tap_set": tap_set, "precision": precision, "threads": threads,
            "images_per_s": ips, "mb_per_s": ips * mb, "raw_mb_per_image": mb}


def bench_reader(tmp: Path, r: int, threads: int, seconds: float, batch: int = 16) -> dict:
    lvls, shard = levels("unet", r), 16
    codec_threads(threads)
    store = make_store(tmp / "read.zarr", lvls, r, 8 * shard, "fp16", shard)
    payload = shard_payload(lvls, r, shard)
    for k in range(8):
        store.write_samples(np.arange(k * shard, (k + 1) * shard), *payload)
    rng, reader = np.random.default_rng(0), FeatureStore.open(store.url)

    def read_one() -> int:
        idx = np.sort(rng.choice(8 * shard, batch, replace=False))
        reader.read_batch(idx)  # decode + the per-sample checksum check, as training reads
        return batch

    ips = sustained(threads, seconds, read_one)
    shutil.rmtree(store.url, ignore_errors=True)
    return {"stage": "train reader", "tap_set": "unet", "precision": "fp16", "threads": threads,
            "images_per_s": ips}


def bench_decode(tmp: Path, r: int, seconds: float) -> dict:
    """JPEG decode + letterbox in one process (the work of one DataLoader worker)."""
    from PIL import Image

    from hairdiff.demo.hairlike import make_hairlike_dataset
    from hairdiff.extract.loading import DecodeDataset
    from hairdiff.extract.readers import get_reader

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="measuring time per row")
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--threads", default=None, help="writer thread counts, e.g. 1,2,4 (default: 1..cores)")
    ap.add_argument("--ceiling", type=float, default=GPU_CEILING_IMG_S,
                    help="GPU images/s to keep up with (default: the H200 FLOP ceiling at 512)")
    ap.add_argument("--out", type=Path, default=None, help="folder for host_pipeline.json")
    a = ap.parse_args()
    cores = os.cpu_count() or 1
    counts = [int(x) for x in a.threads.split(",")] if a.threads else sorted({1, 2, *range(4, cores + 1, 4), cores})
    counts = [c for c in counts if c <= cores]
    rows = []
    with tempfile.TemporaryDirectory(prefix="hairdiff-host-") as d:
        tmp = Path(d)
        rows.append(bench_decode(tmp, a.resolution, a.seconds))
        for tap_set, precision in (("unet", "fp16"), ("unet", "int8"), ("odise", "fp16"), ("odise", "int8")):
            for c in counts if (tap_set, precision) == ("unet", "fp16") else [counts[-1]]:
                rows.append(bench_writes(tmp, tap_set, precision, a.resolution, c, a.seconds))
        for c in sorted({1, counts[-1]}):
            rows.append(bench_reader(tmp, a.resolution, c, a.seconds))
    one = next(r["images_per_s"] for r in rows if r["stage"] == "compress+write" and r["threads"] == 1)
    for r in rows:
        r["images_per_s_per_core"] = r["images_per_s"] / r["threads"]
        if r["stage"] == "compress+write":
            r["cores_for_ceiling"] = a.ceiling / r["images_per_s_per_core"]
    two = next((r["images_per_s"] for r in rows if r["stage"] == "compress+write" and r["threads"] == 2
                and r["tap_set"] == "unet" and r["precision"] == "fp16"), None)
    summary = {"cores": cores, "resolution": a.resolution, "ceiling_images_per_s": a.ceiling,
               "write_scaling_1_to_2": two / one if two else None,
               "decode_cores_for_ceiling": a.ceiling / rows[0]["images_per_s"]}
    path = write("host_pipeline", rows, summary, a.out or Path(__file__).resolve().parent / "results")
    table(f"host side at {a.resolution}² on {cores} cores (GPU ceiling {a.ceiling:.0f} img/s)", rows, [
        ("stage", "stage", ""), ("taps", "tap_set", ""), ("precision", "precision", ""), ("threads", "threads", "d"),
        ("img/s", "images_per_s", ".1f"), ("MB/s", "mb_per_s", ".0f"), ("img/s/core", "images_per_s_per_core", ".1f"),
        ("cores for ceiling", "cores_for_ceiling", ".1f")])
    if two:
        print(f"compress+write scaling from 1 to 2 writer threads: {summary['write_scaling_1_to_2']:.2f}x")
    print(path)


if __name__ == "__main__":
    main()
