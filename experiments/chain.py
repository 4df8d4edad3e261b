"""The chain `pipeline reproduce` and `pipeline sweep` both run: plan -> stores -> run -> scores.

- plan: `checked_splits` checks everything before anything is written (--out, the root and its splits, the
  ids files, test images never trained on, the cache root) and chooses which samples train and which
  score; `write_splits` writes a stand-in's ids files.
- stores: `extract_config` gives each part's ExtractConfig (the recipe's backbone settings, its views for
  training); `extract_store` extracts it (only missing samples: a rerun resumes).
- run: `train_config` gives the recipe's TrainConfig; `train_run` trains (resuming from the last checkpoint).
- scores: `score_run` scores the head on the test store (evaluate's own scoring); `summary_metrics` is the
  part of its metrics a report keeps.
"""
from __future__ import annotations

from pathlib import Path

from hairdiff.cache.distinct import check_distinct, ids_overlap
from hairdiff.core.devices import resolve_device
from hairdiff.core.errors import DatasetError, UsageError
from hairdiff.core.files import atomic_write
from hairdiff.core.paths import check_output_dir
from hairdiff.core.progress import ProgressFactory, silent
from hairdiff.evaluate.config import EvalConfig
from hairdiff.evaluate.metrics import PER_IMAGE_KEYS
from hairdiff.evaluate.run import evaluate_run
from hairdiff.experiments.config import ExperimentOptions
from hairdiff.experiments.recipes import HELD_OUT
from hairdiff.extract.config import ExtractConfig
from hairdiff.extract.readers.ids import id_line, read_ids_file, unknown_hint
from hairdiff.extract.readers.registry import dataset, get_reader
from hairdiff.extract.runner import ExtractStats, run_local
from hairdiff.model.trained import read_run_json
from hairdiff.train.config import TrainConfig
from hairdiff.train.loop import train


# ------------------------------------------------------------------------------------------------ plan
def checked_splits(cfg: ExperimentOptions) -> dict:
    """plan's checks, nothing bound or written (`pipeline sweep` binds its own folder): --out usable and outside
    every store, the root and its splits, the ids files, no test image among the training ones, the cache root
    writable. Returns the chosen splits (write_splits makes them a plan)."""
    check_output_dir(cfg.out, "--out")
    check_distinct(outputs={"--out": cfg.out, **({"--cache-root": cfg.cache_root} if cfg.cache_root else {})},
                   inputs={"--root": [cfg.root]})
    chosen = choose_splits(cfg)
    ids = chosen.get("ids")
    if ids and chosen["train"][0] == chosen["test"][0]:  # one split: an id in both is an image in both
        ids_overlap((f"--ids-train {cfg.ids_train}" if cfg.ids_train else "the training ids", ids["train"]),
                    (f"--ids-test {cfg.ids_test}" if cfg.ids_test else "the test ids", ids["test"]))
    extract_config(cfg, chosen, "train").check_cache_root()
    return chosen


def choose_splits(cfg: ExperimentOptions) -> dict:
    """The split plan without writing anything: every part as (split, ids file or None), the ids each part
    takes ("ids": {part: [id, ...]}, None for whole splits; a stand-in's are those of the files to write),
    the note. Checks the root, its splits and the ids files (readable, not empty, every id in its split)."""
    train, test = dataset(cfg.dataset).paper_splits
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
            ids[part] = known_ids(reader, cfg, parts[part], option, path)
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


def known_ids(reader, cfg: ExperimentOptions, split: str, option: str, path: str) -> list[str]:
    """The ids of an ids file, each one an image of `split`: DatasetError naming the file and the unknown ids."""
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
                           f"{cfg.root}: {shown}{unknown_hint(unknown)}; correct the file (ids look like "
                           f"{known[0]!r})")
    return ids


def write_splits(plan: dict) -> dict:
    """Write a stand-in's ids files; the plan as extract_config takes it."""
    if plan["standin"]:
        for part in ("train", "test"):
            path = Path(plan[part][1])
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, "\n".join(id_line(i) for i in plan["ids"][part]) + "\n")
    return plan


# ---------------------------------------------------------------------------------------------- stores
def extract_config(cfg: ExperimentOptions, plan: dict, part: str) -> ExtractConfig:
    """The ExtractConfig of one part ("train" or "test"): the recipe's backbone settings, its views for training."""
    r = cfg.recipe
    split, ids = plan[part]
    return ExtractConfig(dataset=cfg.dataset, root=cfg.root, split=split, ids_file=ids, model=r.model,
                         resolution=r.resolution, timestep=r.timestep, prompt=r.prompt, taps=r.taps, seed=r.seed,
                         views=r.views if part == "train" else None, limit=None if plan["standin"] else cfg.limit,
                         cache_root=cfg.cache_root, device=cfg.device, workers=0 if r.model == "tiny" else 4)


def extract_store(ecfg: ExtractConfig, progress: ProgressFactory = silent, log=print,
                  stats: ExtractStats | None = None) -> ExtractStats:
    """Extract one part's store (computing only its missing samples) into `stats` (filled as it goes, so an
    interruption can say what was computed); the stats name the store."""
    stats = ExtractStats() if stats is None else stats
    run_local(ecfg, stats, progress=progress, log=log)
    return stats


# ------------------------------------------------------------------------------------------------- run
def train_config(cfg: ExperimentOptions, train_store: str, run: Path) -> TrainConfig:
    """The TrainConfig: the recipe's schedule, optimizer, crops and head size."""
    r = cfg.recipe
    return TrainConfig(cache=[train_store], out=str(run), iters=r.iters, batch_size=r.batch_size, lr=r.lr,
                       weight_decay=r.weight_decay, grad_clip=r.grad_clip, crop=r.crop, small=r.small, seed=r.seed,
                       ckpt_every=r.ckpt_every, device=cfg.device, resume=run.exists(),
                       workers=0 if r.model == "tiny" else 4)


def finished(run: Path, iters: int) -> bool:
    """The run in `run` trained all its `iters` iterations already (run.json, checked, says so)."""
    return (run / "run.json").exists() and read_run_json(run).get("iterations") == iters


def train_run(tcfg: TrainConfig, device: str, progress: ProgressFactory = silent) -> dict:
    """Train (or resume, or find finished) the run of `tcfg`; its summary."""
    return train(tcfg, device=str(resolve_device(device)), progress=progress)


# ---------------------------------------------------------------------------------------------- scores
def score_run(run: Path, test_store: str, out: Path, device: str, *, overlays: int = 4,
              progress: ProgressFactory = silent) -> dict:
    """The run's head scored on the test store (evaluate's own scoring); metrics + provenance, also in `out`."""
    return evaluate_run(EvalConfig(run=str(run), cache=test_store, out=str(out), device=device, overlays=overlays),
                        progress=progress)


def summary_metrics(metrics: dict, *extra: str) -> dict:
    """What a report keeps of evaluate's metrics: the pooled metrics, boundary F, the images scored (and the
    `extra` keys), the per-image means, and the 95% intervals of them all (evaluate/bootstrap.py)."""
    pooled = (*PER_IMAGE_KEYS, "boundary_f")
    out = {**{k: metrics.get(k) for k in (*pooled, "images", *extra)},
           "per_image_mean": {k: metrics["per_image_mean"].get(k) for k in PER_IMAGE_KEYS}}
    iv = metrics.get("intervals")
    if iv:
        out["intervals"] = {**{k: v for k, v in iv.items() if k not in ("pooled", "per_image_mean")},
                            "pooled": {k: iv["pooled"].get(k) for k in pooled},
                            "per_image_mean": {k: iv["per_image_mean"].get(k) for k in PER_IMAGE_KEYS}}
    return out
