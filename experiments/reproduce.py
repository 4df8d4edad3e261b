"""`pipeline reproduce`: the paper's setup for one dataset, end to end, resumable.

Extract the training split (with the recipe's views) and the test split, train the head with the recipe
(core/recipe.py: every setting with its source, most of them not the paper's), score it on the test split,
and write OUT/report.md + OUT/report.json with our rows (pooled and per-image) beside the paper's. The steps
are experiments/chain.py's, which `pipeline sweep` runs per point too. Every step resumes: extraction
computes only missing samples, training continues from its last checkpoint, so running the same command
again finishes an interrupted run.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from hairdiff.core.files import atomic_write, atomic_write_json
from hairdiff.core.manifest import bind, read
from hairdiff.core.progress import ProgressFactory, silent
from hairdiff.evaluate.report import coverage_text
from hairdiff.experiments.chain import (checked_splits, extract_config, extract_store, finished, score_run,
                                        summary_metrics, train_config, train_run, write_splits)
from hairdiff.experiments.config import ReproduceConfig
from hairdiff.experiments.recipes import table
from hairdiff.extract.backbone import sharing_backbones
from hairdiff.extract.readers.registry import get_reader
from hairdiff.extract.runner import ExtractStats
from hairdiff.extract.sources import data_key

FIX_SETTINGS = "run it with the options it was made with, or pass another --out (or delete it) to start afresh"
FIX_DATA = ("the training images changed since OUT/run was trained on them: pass another --out (or delete this one) "
            "to train on them")
TRAINED_ON = "reproduce-trained-on"  # the manifest's record of the training data OUT/run was trained on
OUTPUTS = ("splits", "run", "eval", "report.json", "report.md")  # a folder holding these must hold their record


def bound_settings(cfg: ReproduceConfig, plan: dict) -> dict:
    """What OUT is bound to (core/manifest.py): the dataset and root, the splits and the ids each part takes
    (their digest: an ids file edited in place is another split), the limit and the whole recipe (iters too).
    Not the device or the cache root: they change where and how fast, not what is computed."""
    def digest(ids):
        return None if ids is None else hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]

    ids = plan.get("ids") or {}
    return {"dataset": cfg.dataset, "root": os.path.realpath(cfg.root), "limit": cfg.limit,
            "recipe": cfg.recipe.as_dict(),
            "splits": {part: {"split": plan[part][0], "ids": digest(ids.get(part)),
                              "count": None if ids.get(part) is None else len(ids[part])}
                       for part in ("train", "test")}}


def training_data(cfg: ReproduceConfig, plan: dict) -> dict:
    """The data OUT/run trains on: the data key of the training part (what its store is named by), from the
    content of its files, so an image changed in place is other data. Recorded when training starts, not
    before: a first run stopped by a bad file may be rerun with the file fixed."""
    split, ids = plan["train"][0], (plan.get("ids") or {}).get("train")
    refs = get_reader(cfg.dataset).list_samples(Path(cfg.root), split, ids)  # digests memoised for extract
    return {"training_data": data_key(refs)[:16]}


def plan(cfg: ReproduceConfig) -> dict:
    """Everything `reproduce` checks before it extracts anything, then the split plan (experiments/chain.py):
    --out usable and outside every store, the root and its splits, the ids files (readable, not empty, every
    id an image of its split), test images never trained on, the cache root writable, and OUT bound to these
    settings and, once it trained, to its training data (a folder made otherwise is refused, naming each
    difference; a folder holding results without their record is refused whole). Only then are files written."""
    chosen = checked_splits(cfg)
    out = Path(cfg.out)
    bind(out, "reproduce", bound_settings(cfg, chosen), fix=FIX_SETTINGS, outputs=OUTPUTS)
    if TRAINED_ON in read(out) or os.path.lexists(out / "run"):  # a run without its record of data is refused
        bind(out, TRAINED_ON, training_data(cfg, chosen), fix=FIX_DATA, outputs=("run",))
    return write_splits(chosen)


def reproduce(cfg: ReproduceConfig, progress: ProgressFactory = silent, log=print, kept: dict | None = None) -> dict:
    """The whole reproduction; kept (optional): filled as it goes with what an interruption keeps
    ({"stores": {part: url}, "extracting": (part, ExtractStats), "train": TrainConfig}), for the caller's
    Ctrl-C message."""
    t0 = time.perf_counter()
    out, r = Path(cfg.out), cfg.recipe
    kept = {} if kept is None else kept
    split_plan = plan(cfg)  # every check first: nothing is extracted for a run that would be refused
    rows = cfg.provenance()
    log("recipe (core/recipe.py; the paper fixes only what says 'paper'):")
    for line in table(rows):
        log(line)
    log(f"splits: {split_plan['note']}")
    stores = kept.setdefault("stores", {})
    with sharing_backbones():  # both parts' stores from one loaded backbone
        for part in ("train", "test"):
            stats = ExtractStats()
            kept["extracting"] = (part, stats)
            extract_store(extract_config(cfg, split_plan, part), progress, log, stats)
            stores[part] = stats.store
            kept.pop("extracting")
            log(f"{part} store: computed {stats.computed}, reused {stats.reused}: {stats.store}")
    run = out / "run"
    bind(out, TRAINED_ON, training_data(cfg, split_plan), fix=FIX_DATA)  # before the run depends on it
    tcfg = kept["train"] = train_config(cfg, stores["train"], run)
    if finished(run, r.iters):
        log(f"{run} finished its {r.iters} iterations already: nothing to do")
    summary = train_run(tcfg, cfg.device, progress)
    kept["trained"] = True
    metrics = score_run(run, stores["test"], out / "eval", cfg.device, progress=progress)
    report = {"dataset": cfg.dataset, "recipe": r.as_dict(), "provenance": rows, "splits": split_plan["note"],
              "stores": stores, "run": str(run),
              "train": {k: summary.get(k) for k in ("iterations", "final_loss", "images_per_s")},
              "metrics": summary_metrics(metrics, "images_total", "coverage"),
              "seconds": round(time.perf_counter() - t0, 1), "overlays": str(out / "eval" / "overlays"),
              "random_weights": r.model == "tiny", "limit": cfg.limit}
    atomic_write_json(out / "report.json", report, indent=2)
    atomic_write(out / "report.md", _markdown(report, out / "eval" / "metrics.md"))
    return report


def _markdown(report: dict, metrics_md: Path) -> str:
    lines = [f"# Reproduction: {report['dataset']}", "",
             f"Splits: {report['splits']}." + (f" Limited to the first {report['limit']} images of each split."
                                                 if report["limit"] else "")
             + f" Scored: {coverage_text(report['metrics'])} of the test store.", ""]
    if report["random_weights"]:
        lines += ["**Smoke run with the random-weight `tiny` model: these numbers show that every step runs, "
                  "they say nothing about the method.**", ""]
    lines += [metrics_md.read_text().split("\n", 2)[2].strip() if metrics_md.exists() else "", "",
              "## Recipe", "",
              "Where each setting comes from (core/recipe.py): the paper fixes only the rows whose source "
              "is `paper`; the rest follow Mask2Former's ADE20K semantic config, NVlabs/ODISE, or are our choice "
              "with the reason given.", ""]
    lines += table(report["provenance"])
    loss = report["train"]["final_loss"]
    lines += ["", f"Training: {report['train']['iterations']} iterations, final loss "
              f"{'n/a' if loss is None else f'{loss:.4f}'}. "
              f"Overlays: `{report['overlays']}`. Total {report['seconds']} s.", ""]
    return "\n".join(lines)
