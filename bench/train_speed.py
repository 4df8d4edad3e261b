"""Stage two from the cache against the same head with the frozen backbone run online, side by side in one run,
and the FLOP-bound limit of that ratio.

Both sides run the training step of `pipeline train` (train/step.py's TrainStep, `train_step` below) with the same head, criterion, optimizer, batch and device, iteration by iteration
in turn (so a busy machine slows both alike):
- from the cache: batches from `pipeline train`'s reader (BatchStream over a store written by `pipeline
  extract`, `--readers` threads), waiting for the reader included;
- online: the frozen backbone computes each batch's features inside the step (what ODISE does).

The limit: per image, the online step does the backbone's forward pass and the head's training step, the
cached one only the latter, so the speed-up cannot exceed (backbone FLOPs + head step FLOPs) / head step
FLOPs, both counted by torch's FLOP counter on exactly the work done (extract.flops.count_flops; the step
under FlopCounterMode: forward, loss and backward). Reported beside the measured ratio and their quotient.

    python bench/train_speed.py --model /tmp/sd1 --images 64 --iters 30        # GPU, the paper-size head
    python bench/train_speed.py --model tiny --resolution 64 --images 16 --iters 6 --batch-size 4   # CPU
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from report import checkout_on_path, table, write

checkout_on_path()
from hairdiff.extract.config import ExtractConfig  # noqa: E402
from hairdiff.extract.runner import ExtractStats, build_extractor, list_refs, run_local  # noqa: E402
from hairdiff.train.config import TrainConfig  # noqa: E402

SKIP = 3  # first iterations (allocation, kernel selection) are not timed


def train_step(t: "Trainer", feats: dict, labels: torch.Tensor, it: int, first: int) -> None:
    """One iteration of train/loop.py's step (train/step.py's TrainStep, the loop's per-interval log read
    left out: the loop reads statistics once per --log-every)."""
    t.log.record(t.step({"features": feats, "labels": labels, "global_start": first}, it))
    if t.log.count == t.log_every:
        t.log.read()


class Trainer:
    """A head, batched criterion, optimizer and step as train/loop.py builds them."""

    def __init__(self, levels, cfg: TrainConfig, device: str):
        from hairdiff.model.mask2former.batch_criterion import build_batch_criterion
        from hairdiff.model.mask2former.head import Mask2FormerHead
        from hairdiff.train.optim import build_optimizer
        from hairdiff.train.step import StepLog, TrainStep

        self.device = device
        self.hcfg = cfg.head_config(device)
        torch.manual_seed(cfg.seed)
        self.head = Mask2FormerHead(levels, self.hcfg).to(device).train()
        criterion = build_batch_criterion(self.hcfg).to(device)
        optimizer = build_optimizer(self.head, cfg.lr, cfg.weight_decay)
        self.step = TrainStep(self.head, self.head, criterion, optimizer, device=device, grad_clip=cfg.grad_clip,
                              global_batch=cfg.batch_size, seed=cfg.seed, channels_last=cfg.channels_last)
        self.log_every = cfg.log_every
        self.log = StepLog(self.step.names, cfg.log_every, device)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def head_step_flops(levels, cfg: TrainConfig, device: str, feats: dict, labels: torch.Tensor) -> float:
    """FLOPs per image of one training step (forward, loss, backward) on a batch, torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    t = Trainer(levels, cfg, device)
    counter = FlopCounterMode(display=False)
    with counter:
        train_step(t, feats, labels, 0, 0)
    return counter.get_total_flops() / len(labels)


def _args() -> argparse.Namespace:
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
    return a


def _cached_and_raw(a, device: str, work: Path):
    """The store of the images (extracted once) and the images and labels themselves, letterboxed, for the
    online side; (extraction config, extractor, cached data, train config, images, labels)."""
    from hairdiff.cache.geometry import letterbox_image, letterbox_label
    from hairdiff.train.data import CachedFeatures

    if a.data is None:
        from extract_speed import make_jpegs

        a.data = make_jpegs(work / "data", a.images, a.resolution)
    ext = ExtractConfig(dataset="folder", root=str(a.data), model=a.model, resolution=a.resolution,
                        cache_root=str(work / "cache"), limit=a.images, workers=2)
    fx = build_extractor(ext)
    stats = ExtractStats()
    run_local(ext, stats, log=lambda *x: None, extractor=fx)
    data = CachedFeatures.from_urls([stats.store], seed=0)
    cfg = TrainConfig(cache=[stats.store], out=str(work / "run"), batch_size=a.batch_size, device=device,
                      small=a.small, workers=a.readers, prefetch=max(4, a.readers))
    reader, refs = list_refs(ext)
    loaded = [reader.load(r) for r in refs[: a.images]]
    images = torch.from_numpy(np.stack([letterbox_image(s.image, ext.resolution) for s in loaded]))
    labels = torch.from_numpy(np.stack([letterbox_label(s.label, ext.resolution) for s in loaded]))
    return ext, fx, data, cfg, images, labels


def _alternate(a, device, fx, data, cfg, images, labels) -> dict:
    """Seconds per step of each side, in turn, iteration by iteration (the first SKIP left out)."""
    from hairdiff.extract.loading import to_model_input
    from hairdiff.train.data import BatchStream, Position

    pin = device.startswith("cuda")

    def online_features(idx) -> dict:
        x = to_model_input(images[idx].pin_memory() if pin else images[idx], torch.device(device), fx.bb.dtype)
        with torch.no_grad():
            return {k: v.to(torch.float16) for k, v in fx(x).items()}  # as the cache would give them

    cached, online = Trainer(data.levels, cfg, device), Trainer(data.levels, cfg, device)
    times = {"cached": [], "online": [], "wait": []}
    with BatchStream(data, a.batch_size, cfg.seed, Position(), workers=cfg.workers, prefetch=cfg.prefetch) as stream:
        for it in range(a.iters):
            sync(device)
            t0 = time.perf_counter()
            batch, _ = next(stream)
            waited = time.perf_counter() - t0
            train_step(cached, batch["features"], batch["labels"], it, batch["global_start"])
            sync(device)
            t1 = time.perf_counter()
            idx = np.random.default_rng(it).choice(len(images), a.batch_size, replace=len(images) < a.batch_size)
            train_step(online, online_features(idx), labels[idx], it, 0)
            sync(device)
            t2 = time.perf_counter()
            if it >= SKIP:
                times["cached"].append(t1 - t0)
                times["online"].append(t2 - t1)
                times["wait"].append(waited)
    return times


def main() -> None:
    from hairdiff.extract.flops import count_flops
    from hairdiff.train.data import BatchStream, Position

    a = _args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ext, fx, data, cfg, images, labels = _cached_and_raw(a, device, Path(tempfile.mkdtemp(prefix="train-speed-")))
    # FLOPs per image of exactly the work each side does (the backbone's early stop after its last tap included)
    backbone = count_flops(fx, batch_size=1)["total"]
    with BatchStream(data, a.batch_size, cfg.seed, Position(), workers=1) as probe_stream:
        probe = next(probe_stream)[0]
    head = head_step_flops(data.levels, cfg, device, probe["features"], probe["labels"])
    limit = (backbone + head) / head
    times = _alternate(a, device, fx, data, cfg, images, labels)
    c_ips = a.batch_size / float(np.mean(times["cached"]))
    o_ips = a.batch_size / float(np.mean(times["online"]))
    ratio = c_ips / o_ips
    head_name = "small" if (a.small if a.small is not None else device == "cpu") else "paper (Mask2Former)"
    summary = {"device_arg": device, "model": a.model, "resolution": a.resolution, "batch_size": a.batch_size,
               "iters_timed": a.iters - SKIP, "readers": a.readers, "cached_images_per_s": c_ips,
               "online_images_per_s": o_ips, "train_speedup_vs_online": ratio,
               "flops_per_image": {"backbone_forward": backbone, "head_train_step": head},
               "flop_bound_limit": limit, "fraction_of_limit": ratio / limit,
               "loader_wait_fraction": float(np.sum(times["wait"]) / np.sum(times["cached"])),
               "steps_waiting_fraction": float(np.mean([w > 1e-3 for w in times["wait"]])), "head": head_name,
               "step": "train_step (bench/train_speed.py): train/step.py's TrainStep, as train/loop.py runs it"}
    rows = [{"run": "from the cache (pipeline train's reader)", "images_per_s": c_ips,
             "loader_wait_fraction": summary["loader_wait_fraction"], "gflop_per_image": head / 1e9},
            {"run": "backbone online in the step", "images_per_s": o_ips, "gflop_per_image": (backbone + head) / 1e9}]
    path = write("train_speed", rows, summary, a.out or Path(__file__).resolve().parent / "results")
    table(f"training at {a.resolution}², batch {a.batch_size}, {head_name} head, {a.model} on {device}: "
          f"{ratio:.2f}x from the cache, FLOP-bound limit {limit:.2f}x ({ratio / limit:.2f} of it)", rows, [
              ("run", "run", ""), ("img/s", "images_per_s", ".2f"), ("GFLOP/img", "gflop_per_image", ".2f"),
              ("loader wait", "loader_wait_fraction", ".2f")])
    print(path)


if __name__ == "__main__":
    main()
