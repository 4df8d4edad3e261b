"""`pipeline reproduce`: the paper's setup for one dataset, end to end, resumable.

Extract the training split (with the recipe's views) and the test split, train the head with the recipe
(evaluate/recipes.py: every setting with its source, most of them not the paper's), score it on the test
split, and write OUT/report.md + OUT/report.json with our rows (pooled and per-image) beside the paper's.
Every step resumes: extraction computes only missing samples, training continues from its last
checkpoint, so running the same command again finishes an interrupted run.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from hairdiff.core.errors import UsageError
from hairdiff.core.fields import at_least, option
from hairdiff.core.files import atomic_write, atomic_write_json
from hairdiff.core.progress import ProgressFactory, silent
from hairdiff.evaluate.recipes import HELD_OUT, SPLITS, Recipe, provenance, recipe_for, table


@dataclass(kw_only=True)
class ReproduceConfig:
    dataset: Literal["figaro", "celebamask", "facesynthetics"] = option(
        help="figaro | celebamask | facesynthetics (the paper's three datasets)")
    root: str = option(help="the dataset's root in its published layout")
    model: str = option("CompVis/stable-diffusion-v1-3", help="the backbone: hub id, local folder, or 'tiny' "
                                                              "(a CPU smoke run of the same steps)")
    out: str = option("reproduce", help="folder for the splits, run, evaluation and report")
    limit: int | None = option(None, help="only the first N images of each split (a smoke run)")
    iters: int | None = option(None, help="training iterations (default: the recipe's)")
    ids_train: str | None = option(None, help="ids file of the training images (with --ids-test: your own split)")
    ids_test: str | None = option(None, help="ids file of the test images")
    cache_root: str | None = option(None, help="where stores live (default $HAIRDIFF_CACHE or ~/.cache/hairdiff)")
    device: str = option("auto", help="auto | cpu | cuda | cuda:N")

    def __post_init__(self):
        from hairdiff.core.devices import check_device

        if self.dataset not in SPLITS:
            raise UsageError(f"--dataset {self.dataset!r}: use one of {', '.join(SPLITS)}")
        if self.limit is not None and self.limit < 2:
            raise UsageError(f"--limit {self.limit}: use 2 or more (one image to train on, one to score)")
        at_least(self, 1, "iters")
        if bool(self.ids_train) != bool(self.ids_test):
            raise UsageError("--ids-train and --ids-test go together: pass both, or neither for the dataset's split")
        check_device(self.device)

    @property
    def recipe(self) -> Recipe:
        r = recipe_for(self.model)
        return replace(r, iters=self.iters) if self.iters else r

    def provenance(self) -> list[dict]:
        return provenance(self.recipe, model=self.model, iters=self.iters)


def _split_plan(cfg: ReproduceConfig) -> dict:
    """Which samples train and which score: the paper's splits, the user's ids files, or a held-out stand-in."""
    from hairdiff.extract.readers import get_reader

    train, test = SPLITS[cfg.dataset]
    if cfg.ids_train:
        return {"train": (train, cfg.ids_train), "test": (test, cfg.ids_test), "note": "your --ids files",
                "standin": False}
    reader = get_reader(cfg.dataset)
    found = reader.splits(cfg.root)
    if test in found:
        return {"train": (train, None), "test": (test, None), "note": f"the paper's {train} / {test} splits",
                "standin": False}
    if train not in found:  # e.g. CelebAMask-HQ without CelebA's partition files: every image is the pool
        train = "all"
    refs = reader.list_samples(Path(cfg.root), train)
    ids = [r.id for r in refs][: cfg.limit] if cfg.limit else [r.id for r in refs]
    cut = max(1, round(len(ids) * (1 - HELD_OUT)))
    if cut >= len(ids):
        raise UsageError(f"{cfg.root} has no {test} split and too few {train} images to hold some out: pass "
                         "--ids-train and --ids-test")
    folder = Path(cfg.out) / "splits"
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", ids[:cut]), ("test", ids[cut:])):
        atomic_write(folder / f"{name}.txt", "\n".join(part) + "\n")
    return {"train": (train, str(folder / "train.txt")), "test": (train, str(folder / "test.txt")),
            "note": f"no {test} split under {cfg.root}: the last {HELD_OUT:.0%} of {train} (in id order) is held "
                    f"out as the test split ({len(ids) - cut} images)", "standin": True}


def extract_config(cfg: ReproduceConfig, plan: dict, part: str):
    """The ExtractConfig of one part ("train" or "test"): the recipe's backbone settings, its views for training."""
    from hairdiff.extract.config import ExtractConfig

    r = cfg.recipe
    split, ids = plan[part]
    return ExtractConfig(dataset=cfg.dataset, root=cfg.root, split=split, ids_file=ids, model=r.model,
                         resolution=r.resolution, timestep=r.timestep, prompt=r.prompt, taps=r.taps, seed=r.seed,
                         views=r.views if part == "train" else None, limit=None if plan["standin"] else cfg.limit,
                         cache_root=cfg.cache_root, device=cfg.device, workers=0 if r.model == "tiny" else 4)


def train_config(cfg: ReproduceConfig, train_store: str, run: Path):
    """The TrainConfig: the recipe's schedule, optimizer, crops and head size."""
    from hairdiff.train.config import TrainConfig

    r = cfg.recipe
    return TrainConfig(cache=[train_store], out=str(run), iters=r.iters, batch_size=r.batch_size, lr=r.lr,
                       weight_decay=r.weight_decay, grad_clip=r.grad_clip, crop=r.crop, small=r.small, seed=r.seed,
                       ckpt_every=r.ckpt_every, device=cfg.device, resume=run.exists(),
                       workers=0 if r.model == "tiny" else 4)


def reproduce(cfg: ReproduceConfig, progress: ProgressFactory = silent, log=print) -> dict:
    from hairdiff.evaluate.config import EvalConfig
    from hairdiff.evaluate.run import evaluate_run
    from hairdiff.extract.runner import ExtractStats, run_local
    from hairdiff.train.loop import train

    t0 = time.perf_counter()
    out, r = Path(cfg.out), cfg.recipe
    out.mkdir(parents=True, exist_ok=True)
    plan = _split_plan(cfg)
    rows = cfg.provenance()
    log("recipe (evaluate/recipes.py; the paper fixes only what says 'paper'):")
    for line in table(rows):
        log(line)
    log(f"splits: {plan['note']}")
    stores = {}
    for part in ("train", "test"):
        stats = ExtractStats()
        run_local(extract_config(cfg, plan, part), stats, progress=progress, log=log)
        stores[part] = stats.store
        log(f"{part} store: computed {stats.computed}, reused {stats.reused}: {stats.store}")
    run = out / "run"
    tcfg = train_config(cfg, stores["train"], run)
    from hairdiff.core.devices import resolve_device

    if (run / "run.json").exists() and json.loads((run / "run.json").read_text()).get("iterations") == r.iters:
        log(f"{run} finished its {r.iters} iterations already: nothing to do")
    summary = train(tcfg, device=str(resolve_device(cfg.device)), progress=progress)
    metrics = evaluate_run(EvalConfig(run=str(run), cache=stores["test"], out=str(out / "eval"),
                                      device=cfg.device), progress=progress)
    keys = ("mIoU", "accuracy", "precision", "f1", "hair_iou", "hair_f1")
    report = {"dataset": cfg.dataset, "recipe": r.as_dict(), "provenance": rows, "splits": plan["note"],
              "stores": stores, "run": str(run),
              "train": {k: summary.get(k) for k in ("iterations", "final_loss", "images_per_s")},
              "metrics": {**{k: metrics.get(k) for k in (*keys, "boundary_f", "images", "images_total", "coverage")},
                          "per_image_mean": {k: metrics["per_image_mean"].get(k) for k in keys}},
              "seconds": round(time.perf_counter() - t0, 1), "overlays": str(out / "eval" / "overlays"),
              "random_weights": r.model == "tiny", "limit": cfg.limit}
    atomic_write_json(out / "report.json", report, indent=2)
    atomic_write(out / "report.md", _markdown(report, out / "eval" / "metrics.md"))
    return report


def _markdown(report: dict, metrics_md: Path) -> str:
    lines = [f"# Reproduction: {report['dataset']}", "",
             f"Splits: {report['splits']}." + (f" Limited to the first {report['limit']} images of each split."
                                                 if report["limit"] else ""), ""]
    if report["random_weights"]:
        lines += ["**Smoke run with the random-weight `tiny` model: these numbers show that every step runs, "
                  "they say nothing about the method.**", ""]
    lines += [metrics_md.read_text().split("\n", 2)[2].strip() if metrics_md.exists() else "", "",
              "## Recipe", "",
              "Where each setting comes from (evaluate/recipes.py): the paper fixes only the rows whose source "
              "is `paper`; the rest follow Mask2Former's ADE20K semantic config, NVlabs/ODISE, or are our choice "
              "with the reason given.", ""]
    lines += table(report["provenance"])
    loss = report["train"]["final_loss"]
    lines += ["", f"Training: {report['train']['iterations']} iterations, final loss "
              f"{'n/a' if loss is None else f'{loss:.4f}'}. "
              f"Overlays: `{report['overlays']}`. Total {report['seconds']} s.", ""]
    return "\n".join(lines)
