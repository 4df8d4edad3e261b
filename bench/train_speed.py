"""Stage two from the cache against the same head with the frozen backbone run online, same batch and device.

Cached: `pipeline train`'s own loop (hairdiff.train.loop.train) reading a store written by `pipeline extract`.
Online: the same head, criterion, optimizer and batch, with the backbone computing the features of each
batch's images inside the step (what ODISE does). Reports images/s of both, `train_speedup_vs_online`, and
the fraction of the cached run's time spent waiting on the store readers.

    python bench/train_speed.py --model /tmp/sd1 --images 64 --iters 30        # GPU, the paper-size head
    python bench/train_speed.py --model tiny --resolution 64 --images 16 --iters 4 --batch-size 4   # CPU smoke
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from report import checkout_on_path, table, write

checkout_on_path()
from hairdiff.extract.config import ExtractConfig  # noqa: E402
from hairdiff.extract.runner import ExtractStats, build_extractor, list_refs, run_local  # noqa: E402
from hairdiff.train.config import TrainConfig  # noqa: E402

SKIP = 3  # first iterations (allocation, kernel selection) are not timed


def cached(store: str, out: Path, a, device: str) -> dict:
    from hairdiff.train.loop import train

    cfg = TrainConfig(cache=[store], out=str(out), iters=a.iters, batch_size=a.batch_size, device=device,
                      ckpt_every=a.iters, small=a.small, workers=a.readers, prefetch=4)
    train(cfg, device=device)
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()][SKIP:]
    step = [r["images_per_s"] for r in rows]
    wait = sum(r.get("data_wait_s", 0.0) for r in rows)
    total = sum(a.batch_size / r["images_per_s"] for r in rows)
    return {"images_per_s": float(np.mean(step)), "loader_wait_fraction": wait / total,
            "steps_waiting_fraction": float(np.mean([r.get("data_wait_s", 0.0) > 1e-3 for r in rows]))}


def online(ext: ExtractConfig, a, device: str, levels) -> dict:
    """The training step with the frozen backbone in it: images -> features -> head -> loss -> update."""
    from hairdiff.cache.geometry import letterbox_image, letterbox_label
    from hairdiff.extract.loading import to_model_input
    from hairdiff.train.loop import batch_loss, sample_seed
    from hairdiff.train.mask2former.criterion import build_criterion
    from hairdiff.train.mask2former.head import Mask2FormerHead
    from hairdiff.train.mask2former.targets import semantic_targets

    fx = build_extractor(ext)
    reader, refs = list_refs(ext)
    loaded = [reader.load(r) for r in refs[: a.images]]
    images = torch.from_numpy(np.stack([letterbox_image(s.image, ext.resolution) for s in loaded]))
    labels = torch.from_numpy(np.stack([letterbox_label(s.label, ext.resolution) for s in loaded]))
    hcfg = TrainConfig(cache=["x"], out="x", small=a.small).head_config(device)
    torch.manual_seed(0)
    head = Mask2FormerHead(levels, hcfg).to(device)
    criterion = build_criterion(hcfg).to(device)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-4, weight_decay=0.05)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else nullcontext()
    times = []
    for it in range(a.iters):
        idx = np.random.default_rng(it).choice(len(loaded), a.batch_size, replace=len(loaded) < a.batch_size)
        t = time.perf_counter()
        x = to_model_input(images[idx].pin_memory() if device.startswith("cuda") else images[idx],
                           torch.device(device), fx.bb.dtype)
        with torch.no_grad():
            feats = {k: v.to(torch.float16).float() for k, v in fx(x).items()}  # as the cache would give them
        targets = semantic_targets(labels[idx].to(device), num_classes=hcfg.num_classes)
        with autocast:
            outputs = head(feats)
        loss, _ = batch_loss(criterion, outputs, targets, [sample_seed(0, it, j) for j in range(len(idx))], device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 0.01)
        opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return {"images_per_s": a.batch_size / float(np.mean(times[SKIP:]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--readers", type=int, default=4, help="store reader threads of the cached run")
    ap.add_argument("--small", action=argparse.BooleanOptionalAction, default=None,
                    help="the small head (default: on CPU only, as pipeline train)")
    ap.add_argument("--data", type=Path, default=None, help="folder dataset to use (default: procedural JPEGs)")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    a.iters = max(a.iters, SKIP + 2)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    work = Path(tempfile.mkdtemp(prefix="train-speed-"))
    if a.data is None:
        from extract_speed import make_jpegs

        a.data = make_jpegs(work / "data", a.images, a.resolution)
    ext = ExtractConfig(dataset="folder", root=str(a.data), model=a.model, resolution=a.resolution,
                        cache_root=str(work / "cache"), limit=a.images, workers=2)
    stats = ExtractStats()
    run_local(ext, stats, log=lambda *x: None)
    from hairdiff.cache import FeatureStore

    levels = FeatureStore.open(stats.store).levels
    c = cached(stats.store, work / "run", a, device)
    o = online(ext, a, device, levels)
    summary = {"device_arg": device, "model": a.model, "resolution": a.resolution, "batch_size": a.batch_size,
               "iters_timed": a.iters - SKIP, "cached_images_per_s": c["images_per_s"],
               "online_images_per_s": o["images_per_s"], "train_speedup_vs_online": c["images_per_s"] / o["images_per_s"],
               "loader_wait_fraction": c["loader_wait_fraction"], "steps_waiting_fraction": c["steps_waiting_fraction"],
               "head": "small" if (a.small if a.small is not None else device == "cpu") else "paper (Mask2Former)"}
    rows = [{"run": "from the cache (pipeline train)", **c}, {"run": "backbone online in the step", **o}]
    path = write("train_speed", rows, summary, a.out or Path(__file__).resolve().parent / "results")
    table(f"training at {a.resolution}², batch {a.batch_size}, {summary['head']} head on {device}: "
          f"{summary['train_speedup_vs_online']:.1f}x from the cache", rows, [
              ("run", "run", ""), ("img/s", "images_per_s", ".1f"), ("loader wait", "loader_wait_fraction", ".2f")])
    print(path)


if __name__ == "__main__":
    main()
