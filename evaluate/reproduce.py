"""`pipeline reproduce`: the paper's setup for one dataset, end to end, resumable.

Extract the training split (with the recipe's views) and the test split, train the head with the recipe
(evaluate/recipes.py: every setting with its source, most of them not the paper's), score it on the test
split, and write OUT/report.md + OUT/report.json with our rows (pooled and per-image) beside the paper's.
Every step resumes: extraction computes only missing samples, training continues from its last
checkpoint, so running the same command again finishes an interrupted run.
"""
from __future__ import annotations

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
class ExperimentOptions:
    """The options `reproduce` and `sweep` share: which data, which backbone, how much, where."""
    dataset: Literal["figaro", "celebamask", "facesynthetics"] = option(
        help="figaro | celebamask | facesynthetics (the paper's three datasets)")
    root: str = option(help="the dataset's root in its published layout")
    model: str = option("CompVis/stable-diffusion-v1-3", help="the backbone: hub id, local folder, or 'tiny' "
                                                              "(a CPU smoke run of the same steps)")
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


@dataclass(kw_only=True)
class ReproduceConfig(ExperimentOptions):
    out: str = option("reproduce", help="folder for the splits, run, evaluation and report")

    @property
    def recipe(self) -> Recipe:
        r = recipe_for(self.model)
        return replace(r, iters=self.iters) if self.iters else r

    def provenance(self) -> list[dict]:
        return provenance(self.recipe, model=self.model, iters=self.iters)


def _choose_splits(cfg: ReproduceConfig) -> dict:
    """The split plan without writing anything: every part as (split, ids file or None), the ids each part
    takes ("ids": {part: [id, ...]}, None for whole splits; a stand-in's are those of the files to write),
    the note. Checks the root, its splits and the ids files (readable, not empty, every id in its split)."""
    from hairdiff.extract.readers import get_reader

    train, test = SPLITS[cfg.dataset]
    if not Path(cfg.root).is_dir():
        raise UsageError(f"--root {cfg.root}: no such folder; pass the {cfg.dataset} dataset's top folder in its "
                         "published layout")
    reader = get_reader(cfg.dataset)
    found = reader.splits(cfg.root)
    pool = train if train in found else ("all" if "all" in found else None)
    if cfg.ids_train:
        # Ids select images of the paper's splits; a root without the test split takes both from the pool.
        parts = {"train": train, "test": test} if test in found else {"train": pool, "test": pool}
        if parts["train"] is None:
            raise UsageError(f"--root {cfg.root} holds no {train} split to take the --ids-train images from (found: "
                             f"{', '.join(found) or 'none'}); point --root at the dataset's top folder")
        ids = {}
        for part, option, path in (("train", "--ids-train", cfg.ids_train), ("test", "--ids-test", cfg.ids_test)):
            ids[part] = _known_ids(reader, cfg, parts[part], option, path)
        note = "your --ids files" + ("" if test in found else f" (no {test} split under {cfg.root}: both from {pool})")
        return {"train": (parts["train"], cfg.ids_train), "test": (parts["test"], cfg.ids_test), "note": note,
                "standin": False, "ids": ids}
    if test in found:
        return {"train": (train, None), "test": (test, None), "note": f"the paper's {train} / {test} splits",
                "standin": False, "ids": None}
    if pool is None:
        raise UsageError(f"--root {cfg.root} holds neither the {train} nor the {test} split of {cfg.dataset} (found: "
                         f"{', '.join(found) or 'none'}); point --root at the dataset's top folder")
    refs = reader.list_samples(Path(cfg.root), pool)
    ids = [r.id for r in refs][: cfg.limit] if cfg.limit else [r.id for r in refs]
    cut = max(1, round(len(ids) * (1 - HELD_OUT)))
    if cut >= len(ids):
        raise UsageError(f"{cfg.root} has no {test} split and too few {pool} images to hold some out: pass "
                         "--ids-train and --ids-test")
    folder = Path(cfg.out) / "splits"
    return {"train": (pool, str(folder / "train.txt")), "test": (pool, str(folder / "test.txt")),
            "note": f"no {test} split under {cfg.root}: the last {HELD_OUT:.0%} of {pool} (in id order) is held "
                    f"out as the test split ({len(ids) - cut} images)", "standin": True,
            "ids": {"train": ids[:cut], "test": ids[cut:]}}


def _known_ids(reader, cfg: ReproduceConfig, split: str, option: str, path: str) -> list[str]:
    """The ids of an ids file, each one an image of `split`: DatasetError naming the file and the unknown ids."""
    from hairdiff.core.errors import DatasetError
    from hairdiff.extract.readers.ids import read_ids_file

    try:
        ids = read_ids_file(path)
    except (OSError, UnicodeDecodeError) as e:  # a folder, no permission, not text
        raise DatasetError(f"{option} {path}: cannot read it ({getattr(e, 'strerror', None) or e}); pass a text "
                           "file with one sample id per line") from None
    except DatasetError as e:
        raise DatasetError(f"{option} {e}") from None
    known = [r.id for r in reader.list_samples(Path(cfg.root), split)]
    have = set(known)
    unknown = [i for i in ids if i not in have]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else "")
        raise DatasetError(f"{option} {path}: {len(unknown)} id(s) are not images of {cfg.dataset}/{split} under "
                           f"{cfg.root}: {shown}; correct the file (ids look like {known[0]!r})")
    return ids


def _write_splits(plan: dict) -> dict:
    """Write a stand-in's ids files; the plan as extract_config takes it."""
    if plan["standin"]:
        for part in ("train", "test"):
            path = Path(plan[part][1])
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, "\n".join(plan["ids"][part]) + "\n")
    return plan


def _split_plan(cfg: ReproduceConfig) -> dict:
    """Which samples train and which score: the paper's splits, the user's ids files, or a held-out stand-in
    (whose ids files it writes under OUT/splits/)."""
    return _write_splits(_choose_splits(cfg))


FIX_SETTINGS = "run it with the options it was made with, or pass another --out (or delete it) to start afresh"
FIX_DATA = ("the training images changed since OUT/run was trained on them: pass another --out (or delete this one) "
            "to train on them")
TRAINED_ON = "reproduce-trained-on"  # the manifest's record of the training data OUT/run was trained on


def bound_settings(cfg: ReproduceConfig, plan: dict) -> dict:
    """What OUT is bound to (core/manifest.py): the dataset and root, the splits and the ids each part takes
    (their digest: an ids file edited in place is another split), the limit and the whole recipe (iters too).
    Not the device or the cache root: they change where and how fast, not what is computed."""
    import hashlib
    import os

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
    from hairdiff.extract.readers import get_reader
    from hairdiff.extract.sources import data_key

    split, ids = plan["train"][0], (plan.get("ids") or {}).get("train")
    refs = get_reader(cfg.dataset).list_samples(Path(cfg.root), split, ids)  # digests memoised for extract
    return {"training_data": data_key(refs)[:16]}


def plan(cfg: ReproduceConfig) -> dict:
    """Everything `reproduce` checks before it extracts anything, then the split plan (as _split_plan):
    --out usable and outside every store, the root and its splits, the ids files (readable, not empty, every
    id an image of its split), test images never trained on, the cache root writable, and OUT bound to these
    settings and, once it trained, to its training data (a folder made otherwise is refused, naming each
    difference). Only then are files written."""
    from hairdiff.core.manifest import bind, read

    chosen = checked_splits(cfg)
    out = Path(cfg.out)
    bind(out, "reproduce", bound_settings(cfg, chosen), fix=FIX_SETTINGS)
    if TRAINED_ON in read(out):
        bind(out, TRAINED_ON, training_data(cfg, chosen), fix=FIX_DATA)
    return _write_splits(chosen)


def checked_splits(cfg: ReproduceConfig) -> dict:
    """plan's checks, nothing bound or written (`pipeline sweep` binds its own folder): --out usable and outside
    every store, the root and its splits, the ids files, no test image among the training ones, the cache root
    writable. Returns the chosen splits (_write_splits makes them a plan)."""
    from hairdiff.cache.distinct import check_distinct, ids_overlap
    from hairdiff.core.paths import check_output_dir

    check_output_dir(cfg.out, "--out")
    check_distinct(outputs={"--out": cfg.out, **({"--cache-root": cfg.cache_root} if cfg.cache_root else {})},
                   inputs={"--root": [cfg.root]})
    chosen = _choose_splits(cfg)
    ids = chosen.get("ids")
    if ids and chosen["train"][0] == chosen["test"][0]:  # one split: an id in both is an image in both
        ids_overlap((f"--ids-train {cfg.ids_train}" if cfg.ids_train else "the training ids", ids["train"]),
                    (f"--ids-test {cfg.ids_test}" if cfg.ids_test else "the test ids", ids["test"]))
    extract_config(cfg, chosen, "train").check_cache_root()
    return chosen


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


def reproduce(cfg: ReproduceConfig, progress: ProgressFactory = silent, log=print, kept: dict | None = None) -> dict:
    """The whole reproduction; kept (optional): filled as it goes with what an interruption keeps
    ({"stores": {part: url}, "extracting": (part, ExtractStats), "train": TrainConfig}), for the caller's
    Ctrl-C message."""
    from hairdiff.core.manifest import bind
    from hairdiff.evaluate.config import EvalConfig
    from hairdiff.evaluate.run import evaluate_run
    from hairdiff.extract.runner import ExtractStats, run_local
    from hairdiff.train.checkpoint import read_run_json
    from hairdiff.train.loop import train

    t0 = time.perf_counter()
    out, r = Path(cfg.out), cfg.recipe
    kept = {} if kept is None else kept
    split_plan = plan(cfg)  # every check first: nothing is extracted for a run that would be refused
    rows = cfg.provenance()
    log("recipe (evaluate/recipes.py; the paper fixes only what says 'paper'):")
    for line in table(rows):
        log(line)
    log(f"splits: {split_plan['note']}")
    stores = kept.setdefault("stores", {})
    for part in ("train", "test"):
        stats = ExtractStats()
        kept["extracting"] = (part, stats)
        run_local(extract_config(cfg, split_plan, part), stats, progress=progress, log=log)
        stores[part] = stats.store
        kept.pop("extracting")
        log(f"{part} store: computed {stats.computed}, reused {stats.reused}: {stats.store}")
    run = out / "run"
    bind(out, TRAINED_ON, training_data(cfg, split_plan), fix=FIX_DATA)  # before the run depends on it
    tcfg = kept["train"] = train_config(cfg, stores["train"], run)
    from hairdiff.core.devices import resolve_device

    if (run / "run.json").exists() and read_run_json(run).get("iterations") == r.iters:
        log(f"{run} finished its {r.iters} iterations already: nothing to do")
    summary = train(tcfg, device=str(resolve_device(cfg.device)), progress=progress)
    kept["trained"] = True
    metrics = evaluate_run(EvalConfig(run=str(run), cache=stores["test"], out=str(out / "eval"),
                                      device=cfg.device), progress=progress)
    keys = ("mIoU", "accuracy", "precision", "f1", "hair_iou", "hair_f1")
    report = {"dataset": cfg.dataset, "recipe": r.as_dict(), "provenance": rows, "splits": split_plan["note"],
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
    from hairdiff.evaluate.report import coverage_text

    lines = [f"# Reproduction: {report['dataset']}", "",
             f"Splits: {report['splits']}." + (f" Limited to the first {report['limit']} images of each split."
                                                 if report["limit"] else "")
             + f" Scored: {coverage_text(report['metrics'])} of the test store.", ""]
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
