"""`pipeline demo`: the whole method end to end with nothing to download and no GPU.

Procedural hair-like portraits (train and test folders) -> the built-in tiny Stable-Diffusion-architecture
model -> two feature stores -> a small Mask2Former head -> metrics on the held-out store. It runs the same
code paths as the real commands, only smaller, so a fresh install can be checked in about two minutes.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

err = Console(stderr=True, soft_wrap=True)  # never break paths across lines


def demo_command(
    out: Annotated[Path, typer.Option(help="folder for the demo's data, stores, run and evaluation")]
    = Path("hairdiff-demo"),
    train_images: Annotated[int, typer.Option(help="procedural training images")] = 64,
    test_images: Annotated[int, typer.Option(help="procedural held-out images")] = 16,
    size: Annotated[int, typer.Option(help="image and feature-input resolution")] = 128,
    iters: Annotated[int, typer.Option(help="training iterations")] = 300,
    seed: Annotated[int, typer.Option(help="seed of data, noise and training")] = 0,
) -> None:
    """Run extract -> train -> eval on built-in data with the tiny model (CPU, about 2 minutes)."""
    from demo.hairlike import make_hairlike_dataset
    from evaluate.run import evaluate_run
    from extract.commands import _progress
    from extract.runner import ExtractConfig, ExtractStats, run_local
    from train.loop import train

    t0 = time.perf_counter()
    data = out / "data"
    make_hairlike_dataset(data / "train", n=train_images, size=size, seed=seed)
    make_hairlike_dataset(data / "test", n=test_images, size=size, seed=seed + 1)
    stores = {}
    for split in ("train", "test"):
        cfg = ExtractConfig(dataset="folder", root=str(data), split=split, cache_root=str(out / "cache"),
                            model="tiny", resolution=size, device="cpu", batch_size=16, workers=0, seed=seed)
        stats = ExtractStats()
        run_local(cfg, stats, progress_factory=_progress, log=err.print)
        stores[split] = stats.store
    run = out / "run"
    train([stores["train"]], run, iters=iters, batch_size=8, lr=1e-3, seed=seed, device="cpu",
          ckpt_every=max(1, iters // 2), resume=run.exists(), small=True, workers=0)
    metrics = evaluate_run(run, stores["test"], out / "eval", device="cpu", batch_size=16)
    table = Table(title=f"hairdiff demo: held-out procedural images ({test_images})")
    for key in ("mIoU", "accuracy", "precision", "f1", "hair_iou", "boundary_f"):
        if key in metrics:
            table.add_column(key)
    table.add_row(*[f"{metrics[k]:.2f}" for k in ("mIoU", "accuracy", "precision", "f1", "hair_iou", "boundary_f")
                    if k in metrics])
    Console().print(table)
    summary = {"seconds": round(time.perf_counter() - t0, 1), "stores": stores, "run": str(run),
               "metrics": str(out / "eval" / "metrics.json")}
    (out / "demo.json").write_text(json.dumps(summary, indent=2))
    err.print(f"done in {summary['seconds']} s")
    print(out / "eval" / "metrics.json")
