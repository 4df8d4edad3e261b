"""Cache compactness and codec speed: bytes per image of the stored features for each codec and precision
option, and encode/decode MB/s on one core.

Reads real extracted samples from a feature store (e.g. one written by `pipeline extract` with a model of
the SD 1.x architecture) and re-encodes every level with each option, per sample chunk as the store does
(the store's own codecs, `pipeline extract --codec`, are built from cache/codecs.py, so they cannot drift).
Every repeat runs every option in turn and each keeps its fastest repeat (side by side on a busy machine).
`codec cores` is the cores the codec alone needs to encode the GPU's ceiling (411 images/s at 512 on an
H200): the write path around it (bench/host_pipeline.py) costs more. Prints a table and writes
bench/results/cache_codecs.json.

    python bench/cache_codecs.py --store STORE [--samples 3] [--repeats 3]
"""
from __future__ import annotations

import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from numcodecs import LZ4, Blosc, Zstd
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
__import__("pipeline").use_checkout()
from hairdiff.cache import FeatureStore  # noqa: E402
from hairdiff.cache.codecs import CODECS as STORE_CODECS  # noqa: E402
from hairdiff.cache.codecs import DEFAULT_CODEC  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def to_bf16(x: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even float32 -> bfloat16 bit patterns (uint16)."""
    u = x.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << 16).view(np.float32)


def int8_channel(x: np.ndarray):
    flat = x.reshape(x.shape[0], -1).astype(np.float32)
    mn, mx = flat.min(1), flat.max(1)
    scale = np.maximum(mx - mn, 1e-12) / 254.0
    off = (mx + mn) / 2
    q = np.clip(np.rint((x - off[:, None, None]) / scale[:, None, None]), -127, 127).astype(np.int8)
    side = np.concatenate([scale, off]).astype(np.float32).tobytes()
    return q, side, (q.astype(np.float32) * scale[:, None, None] + off[:, None, None])


PRECISIONS = ("fp16", "bf16", "int8")
CEILING_IMG_S = 411.0  # the H200's FLOP ceiling at 512 (bench/host_pipeline.py)
_SHUFFLES = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE, "bitshuffle": Blosc.BITSHUFFLE}


def blosc(cname: str, clevel: int, shuffle: str) -> Blosc:
    return Blosc(cname=cname, clevel=clevel, shuffle=_SHUFFLES[shuffle])


def blosc_name(cname: str, clevel: int, shuffle: str) -> str:
    return f"blosc-{cname}-{clevel}-{'byteshuffle' if shuffle == 'shuffle' else shuffle}"


CODECS = {
    "none": None,
    "zstd-1": Zstd(level=1),
    "zstd-3": Zstd(level=3),
    "lz4": LZ4(),
    **{blosc_name(*c): blosc(*c) for c in [("zstd", 1, "bitshuffle"), ("zstd", 1, "shuffle"), ("zstd", 3, "shuffle"),
                                           ("zstd", 9, "bitshuffle"), ("lz4", 1, "bitshuffle"), ("lz4", 5, "shuffle"),
                                           ("lz4", 9, "bitshuffle"), ("lz4hc", 1, "bitshuffle"),
                                           ("lz4hc", 5, "bitshuffle")]},
    # the store's own: `pipeline extract --codec NAME`
    **{blosc_name(c.cname, c.clevel, c.shuffle): blosc(c.cname, c.clevel, c.shuffle) for c in STORE_CODECS.values()},
}
STORE_NAMES = {blosc_name(c.cname, c.clevel, c.shuffle): f"--codec {n}" + (" (default)" if n == DEFAULT_CODEC else "")
               for n, c in STORE_CODECS.items()}


def stored_form(samples: list[dict[str, np.ndarray]], precision: str) -> tuple[list, int, float]:
    """(arrays as stored, side-information bytes, max error relative to each level's max) of the samples."""
    arrays, side_bytes, max_rel = [], 0, 0.0
    for feats in samples:
        for x in feats.values():
            x32 = x.astype(np.float32)
            if precision == "fp16":
                arr, back = x.astype(np.float16), x.astype(np.float16).astype(np.float32)
            elif precision == "bf16":
                arr = to_bf16(x32)
                back = from_bf16(arr)
            else:
                arr, side, back = int8_channel(x32)
                side_bytes += len(side)
            arrays.append(np.ascontiguousarray(arr))  # an array, not bytes: Blosc shuffles by the element size
            rng = float(np.abs(x32).max()) or 1.0
            max_rel = max(max_rel, float(np.abs(back - x32).max()) / rng)
    return arrays, side_bytes, max_rel


def measure(arrays: list[np.ndarray], side_bytes: int, max_rel: float, n: int, precision: str, codec) -> dict:
    raw_mb = sum(a.nbytes for a in arrays) / 1e6
    t = time.perf_counter()
    enc = [codec.encode(a) if codec is not None else a.tobytes() for a in arrays]
    enc_s = time.perf_counter() - t
    t = time.perf_counter()
    if codec is not None:
        for e in enc:
            codec.decode(e)
    dec_s = time.perf_counter() - t
    nbytes = sum(len(e) for e in enc) + side_bytes
    return {"precision": precision, "mb_per_image": nbytes / n / 1e6, "ratio_vs_fp16_raw": 0.0,
            "encode_mb_s": raw_mb / enc_s if codec is not None else None,
            "decode_mb_s": raw_mb / dec_s if codec is not None else None,
            "codec_cores_for_ceiling": CEILING_IMG_S * raw_mb / n / (raw_mb / enc_s) if codec is not None else None,
            "max_error_rel_to_level_max": max_rel}


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3, help="rounds over every option; each keeps its fastest")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for cache_codecs.json")
    args = ap.parse_args()
    store = FeatureStore.open(args.store)
    idx = np.flatnonzero(store.done_mask())[: args.samples]
    samples = [store.read_sample(int(i))["features"] for i in idx]
    fp16_raw = sum(x.size * 2 for x in samples[0].values()) / 1e6
    import numcodecs.blosc

    numcodecs.blosc.use_threads = False  # one core, as in the store's writer and reader threads
    best: dict = {}
    for precision in PRECISIONS:
        stored = stored_form(samples, precision)
        for _ in range(max(1, args.repeats)):
            for name, codec in CODECS.items():
                r = measure(*stored, len(samples), precision, codec)
                r["codec"], r["store"] = name, STORE_NAMES.get(name)
                r["ratio_vs_fp16_raw"] = fp16_raw / r["mb_per_image"]
                old = best.get((precision, name))
                if old is not None and r["encode_mb_s"]:
                    r["encode_mb_s"] = max(r["encode_mb_s"], old["encode_mb_s"])
                    r["decode_mb_s"] = max(r["decode_mb_s"], old["decode_mb_s"])
                    r["codec_cores_for_ceiling"] = min(r["codec_cores_for_ceiling"], old["codec_cores_for_ceiling"])
                best[(precision, name)] = r
    rows = list(best.values())
    import torch

    meta = {"device": "cpu", "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
            "numcodecs": numcodecs.__version__, "command": " ".join(["python"] + sys.argv),
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "store": store.url,
            "model": store.fingerprint_inputs.get("model"), "taps": store.fingerprint_inputs.get("taps"),
            "resolution": store.resolution, "samples": int(len(idx)), "fp16_raw_mb_per_image": fp16_raw,
            "repeats": args.repeats, "ceiling_images_per_s": CEILING_IMG_S,
            "note": "features of the given store's model; random-weight features compress differently from real ones"}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cache_codecs.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    t = Table(title=f"bytes per image, {meta['taps']} at {store.resolution} ({len(idx)} samples, "
                    f"raw fp16 {fp16_raw:.2f} MB)")
    for c in ("precision", "codec", "store", "MB/image", "x vs fp16 raw", "enc MB/s", "dec MB/s", "codec cores",
              "max rel err"):
        t.add_column(c, no_wrap=True)
    for r in rows:
        t.add_row(r["precision"], r["codec"], r["store"] or "", f"{r['mb_per_image']:.2f}",
                  f"{r['ratio_vs_fp16_raw']:.3f}", f"{r['encode_mb_s']:.0f}" if r["encode_mb_s"] else "-",
                  f"{r['decode_mb_s']:.0f}" if r["decode_mb_s"] else "-",
                  f"{r['codec_cores_for_ceiling']:.1f}" if r["codec_cores_for_ceiling"] else "-",
                  f"{r['max_error_rel_to_level_max']:.2e}")
    Console(width=200).print(t)


if __name__ == "__main__":
    main()
