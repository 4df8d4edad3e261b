"""`pipeline demo`: the whole method end to end with nothing to download and no GPU.

Procedural hair-like portraits (train and test folders) -> the built-in tiny Stable-Diffusion-architecture
model -> two feature stores -> a small Mask2Former head -> metrics on the held-out store. It runs the same
code paths as the real commands, only smaller, so a fresh install can be checked in a few minutes.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from hairdiff.core.fields import LOCAL, at_least, check_paths, option, seed_range
from hairdiff.core.progress import ProgressFactory, silent

MAX_SIZE = 1024


@dataclass(kw_only=True)
class DemoConfig:
    out: str = option("hairdiff-demo", help="folder for the demo's data, stores, run and evaluation", path=LOCAL)
    train_images: int = option(64, help="procedural training images")
    test_images: int = option(16, help="procedural held-out images")
    size: int = option(128, help="image and feature-input resolution (a multiple of 64)")
    iters: int = option(300, help="training iterations")
    seed: int = option(0, help="seed of data, noise and training")

    def __post_init__(self):
        from hairdiff.core.errors import UsageError

        check_paths(self)
        at_least(self, 1, "train_images", "test_images", "iters")
        seed_range(self, "seed")
        if not (64 <= self.size <= MAX_SIZE and self.size % 64 == 0):
            raise UsageError(f"--size {self.size}: use a multiple of 64 from 64 to {MAX_SIZE} (the tiny model "
                             "downsamples 64x; the procedural images are drawn in memory)")


def run_demo(cfg: DemoConfig, progress: ProgressFactory = silent, log=print) -> dict:
    """Builds the data, extracts both splits, trains, evaluates; returns the held-out metrics."""
    from hairdiff.cache.distinct import check_distinct
    from hairdiff.core.manifest import bind
    from hairdiff.core.paths import check_output_dir
    from hairdiff.demo.hairlike import make_hairlike_dataset
    from hairdiff.evaluate.config import EvalConfig
    from hairdiff.evaluate.run import evaluate_run
    from hairdiff.extract.config import ExtractConfig
    from hairdiff.extract.runner import ExtractStats, run_local
    from hairdiff.train.config import TrainConfig
    from hairdiff.train.loop import train

    t0 = time.perf_counter()
    out = Path(cfg.out)
    check_output_dir(out, "--out")
    check_distinct(outputs={"--out": out})
    # OUT's data, stores and run are made by these settings: a rerun with others would train on a mix of old and
    # new images (the data folder keeps files the new settings do not write) and report it as theirs.
    bind(out, "demo", {k: v for k, v in dataclasses.asdict(cfg).items() if k != "out"},
         fix="run it with the settings it was made with, or pass another --out (or delete it) to start afresh",
         outputs=("data", "cache", "run", "eval", "demo.json"))
    data = out / "data"
    make_hairlike_dataset(data / "train", n=cfg.train_images, size=cfg.size, seed=cfg.seed)
    make_hairlike_dataset(data / "test", n=cfg.test_images, size=cfg.size, seed=cfg.seed + 1)
    stores = {}
    for split in ("train", "test"):
        ext = ExtractConfig(dataset="folder", root=str(data), split=split, cache_root=str(out / "cache"),
                            model="tiny", resolution=cfg.size, device="cpu", batch_size=16, workers=0, seed=cfg.seed)
        stats = ExtractStats()
        run_local(ext, stats, progress=progress, log=log)
        stores[split] = stats.store
    run = out / "run"
    train(TrainConfig(cache=[stores["train"]], out=str(run), iters=cfg.iters, batch_size=8, lr=1e-3, seed=cfg.seed,
                      device="cpu", ckpt_every=max(1, cfg.iters // 2), resume=run.exists(), small=True, workers=0),
          device="cpu", progress=progress)
    metrics = evaluate_run(EvalConfig(run=str(run), cache=stores["test"], out=str(out / "eval"), device="cpu",
                                      batch_size=16), progress=progress)
    summary = {"seconds": round(time.perf_counter() - t0, 1), "stores": stores, "run": str(run),
               "metrics": str(out / "eval" / "metrics.json")}
    (out / "demo.json").write_text(json.dumps(summary, indent=2))
    return {**metrics, **summary}
