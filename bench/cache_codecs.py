"""Cache compactness: bytes per image of the stored features for each codec and precision option.

Reads real extracted samples from a feature store (e.g. one written by `pipeline extract` with a model of
the SD 1.x architecture) and re-encodes every level with each option, per sample chunk as the store does.
Prints a table and writes bench/results/cache_codecs.json.

    python bench/cache_codecs.py --store STORE [--samples 3]
"""
from __future__ import annotations

import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numcodecs
import numpy as np
from numcodecs import LZ4, Blosc, Zstd
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
__import__("pipeline").use_checkout()
from hairdiff.cache import FeatureStore  # noqa: E402

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
CODECS = {
    "none": None,
    "zstd-1": Zstd(level=1),
    "zstd-3": Zstd(level=3),
    "zstd-9": Zstd(level=9),
    "lz4": LZ4(),
    "blosc-zstd3-byteshuffle": Blosc(cname="zstd", clevel=3, shuffle=Blosc.SHUFFLE),
    "blosc-zstd3-bitshuffle": Blosc(cname="zstd", clevel=3, shuffle=Blosc.BITSHUFFLE),
    "blosc-zstd9-bitshuffle": Blosc(cname="zstd", clevel=9, shuffle=Blosc.BITSHUFFLE),
    "blosc-lz4-bitshuffle": Blosc(cname="lz4", clevel=5, shuffle=Blosc.BITSHUFFLE),
}


def measure(samples: list[dict[str, np.ndarray]], precision: str, codec) -> dict:
    nbytes = raw_mb = 0
    enc_s = dec_s = 0.0
    max_rel = 0.0
    for feats in samples:
        for x in feats.values():
            x32 = x.astype(np.float32)
            side = b""
            if precision == "fp16":
                arr, back = x.astype(np.float16), x.astype(np.float16).astype(np.float32)
            elif precision == "bf16":
                arr = to_bf16(x32)
                back = from_bf16(arr)
            else:
                arr, side, back = int8_channel(x32)
            buf = np.ascontiguousarray(arr)  # an array, not bytes: Blosc shuffles by the element size
            raw_mb += buf.nbytes / 1e6
            t = time.perf_counter()
            enc = codec.encode(buf) if codec is not None else buf.tobytes()
            enc_s += time.perf_counter() - t
            t = time.perf_counter()
            if codec is not None:
                codec.decode(enc)
            dec_s += time.perf_counter() - t
            nbytes += len(enc) + len(side)
            rng = float(np.abs(x32).max()) or 1.0
            max_rel = max(max_rel, float(np.abs(back - x32).max()) / rng)
    n = len(samples)
    return {"precision": precision, "mb_per_image": nbytes / n / 1e6, "ratio_vs_fp16_raw": 0.0,
            "encode_mb_s": raw_mb / enc_s if enc_s else None, "decode_mb_s": raw_mb / dec_s if dec_s else None,
            "max_error_rel_to_level_max": max_rel}


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for cache_codecs.json")
    args = ap.parse_args()
    store = FeatureStore.open(args.store)
    idx = np.flatnonzero(store.done_mask())[: args.samples]
    samples = [store.read_sample(int(i))["features"] for i in idx]
    fp16_raw = sum(x.size * 2 for x in samples[0].values()) / 1e6
    rows = []
    for precision in PRECISIONS:
        for name, codec in CODECS.items():
            r = measure(samples, precision, codec)
            r["codec"] = name
            r["ratio_vs_fp16_raw"] = fp16_raw / r["mb_per_image"]
            rows.append(r)
    import torch

    meta = {"device": "cpu", "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
            "numcodecs": numcodecs.__version__, "command": " ".join(["python"] + sys.argv),
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "store": store.url,
            "model": store.fingerprint_inputs.get("model"), "taps": store.fingerprint_inputs.get("taps"),
            "resolution": store.resolution, "samples": int(len(idx)), "fp16_raw_mb_per_image": fp16_raw,
            "note": "features of the given store's model; random-weight features compress differently from real ones"}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cache_codecs.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    t = Table(title=f"bytes per image, {meta['taps']} at {store.resolution} ({len(idx)} samples, "
                    f"raw fp16 {fp16_raw:.2f} MB)")
    for c in ("precision", "codec", "MB/image", "x vs fp16 raw", "enc MB/s", "dec MB/s", "max rel err"):
        t.add_column(c, no_wrap=True)
    for r in rows:
        t.add_row(r["precision"], r["codec"], f"{r['mb_per_image']:.2f}", f"{r['ratio_vs_fp16_raw']:.2f}",
                  f"{r['encode_mb_s']:.0f}" if r["encode_mb_s"] else "-",
                  f"{r['decode_mb_s']:.0f}" if r["decode_mb_s"] else "-", f"{r['max_error_rel_to_level_max']:.2e}")
    Console().print(t)


if __name__ == "__main__":
    main()
