"""`pipeline sweep`: the paper's choice of timestep and prompt (and the tap set), checked on one grid.

Every point of the grid (timestep x prompt x tap set) is `pipeline reproduce`'s chain with those three
extraction settings changed: the train and test stores (reused from the cache root when they exist: the
fingerprint keys timestep, prompt and taps), the recipe's head trained with the same seed, scored on the test
split. Everything else is shared by all points: the recipe of evaluate/recipes.py, with --iters, --limit and
--views overrides. Outputs: OUT/points/<name>/{run,eval}, OUT/sweep.json (a row per point), OUT/sweep.md (the
table, best point marked) and OUT/sweep.png (mIoU and hair IoU against the timestep).

Resuming: OUT/manifest.json binds the folder to the shared settings (core/manifest.py): a run with other shared
settings is refused naming what differs, while the grid itself may change (points are added or dropped; each
point's folder is named for and bound to its own settings). A finished point (point.json written after its
eval) is read back; an unfinished one continues from its stores and its run's last checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from hairdiff.core.errors import Interrupted, UsageError
from hairdiff.core.fields import at_least, option
from hairdiff.core.files import atomic_write, atomic_write_json
from hairdiff.core.progress import ProgressFactory, silent
from hairdiff.evaluate.recipes import OPTION, Recipe, table
from hairdiff.evaluate.reproduce import (ExperimentOptions, ReproduceConfig, _write_splits, checked_splits,
                                        extract_config, train_config)

AXES = ("timestep", "prompt", "taps")
TAP_SET_NAMES = ("unet", "odise")  # extract/taps.py TAP_SETS; kept here so validating loads no torch
MAX_TIMESTEP = 999  # extract/config.py's bound (the SD 1.x schedule's steps)
METRIC_KEYS = ("mIoU", "accuracy", "precision", "f1", "hair_iou", "hair_f1")
SWEEP_AXIS = "sweep axis"


@dataclass(frozen=True)
class Point:
    timestep: int
    prompt: str
    taps: str

    @property
    def name(self) -> str:
        """Readable and unique: t<timestep>-<taps>-<prompt slug>-<hash of all three> (a folder name)."""
        slug = re.sub(r"[^a-z0-9]+", "_", self.prompt.lower()).strip("_")[:24] or "empty"
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:8]
        return f"t{self.timestep}-{self.taps}-{slug}-{digest}"


# ------------------------------------------------------------------------------------------------ the grid
def parse_timesteps(text: str) -> list[int]:
    """'0,25,50' -> [0, 25, 50]; UsageError naming the first bad item."""
    items = [s.strip() for s in str(text).split(",")]
    if not any(items):
        raise UsageError("--timesteps is empty: give a comma-separated list such as 0,25,50")
    out = []
    for s in items:
        if not re.fullmatch(r"\d+", s):
            raise UsageError(f"--timesteps {text!r}: {s!r} is not a whole number; give integers 0..{MAX_TIMESTEP} "
                             "separated by commas, e.g. 0,25,50")
        if int(s) > MAX_TIMESTEP:
            raise UsageError(f"--timesteps {text!r}: {s} is out of 0..{MAX_TIMESTEP} (the diffusion schedule's steps)")
        out.append(int(s))
    _no_twice("--timesteps", text, out)
    return out


def parse_taps(text: str) -> list[str]:
    """'unet,odise' -> ['unet', 'odise']: named tap sets only (a module list is `pipeline extract --taps`)."""
    items = [s.strip() for s in str(text).split(",")]
    if not any(items):
        raise UsageError(f"--taps is empty: give tap sets separated by commas ({', '.join(TAP_SET_NAMES)})")
    for s in items:
        if s not in TAP_SET_NAMES:
            raise UsageError(f"--taps {text!r}: {s!r} is not a tap set; use {' or '.join(TAP_SET_NAMES)}, separated "
                             "by commas (explicit module names: run `pipeline extract --taps` per setting)")
    _no_twice("--taps", text, items)
    return items


def read_prompts_file(path: str) -> list[str]:
    """One prompt per line, surrounding spaces stripped; blank lines are skipped and a line `""` is the empty
    prompt (so a stray blank line never adds a point)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or type(e).__name__
        raise UsageError(f"--prompts-file {path}: cannot read it ({reason}): pass a UTF-8 text file, one prompt "
                         "per line") from None
    lines = [line.strip() for line in text.splitlines()]
    return ["" if line == '""' else line for line in lines if line]


def _no_twice(flag: str, text, values: list) -> None:
    seen = set()
    for v in values:
        if v in seen:
            raise UsageError(f"{flag} {text!r}: {v!r} is given twice, which would make duplicate points: give each "
                             "value once")
        seen.add(v)


# --------------------------------------------------------------------------------------------- the config
@dataclass(kw_only=True)
class SweepConfig(ExperimentOptions):
    out: str = option("sweep", help="folder for points/<name>/{run,eval}, sweep.json, sweep.md, sweep.png")
    timesteps: str = option("0", help=f"the timesteps to try, comma-separated integers 0..{MAX_TIMESTEP} "
                                      "(e.g. 0,25,50,100,200)")
    prompts: list[str] | None = option(None, help="the prompts to try: one or more values after the flag, or the "
                                                  "flag repeated; \"\" is the empty prompt (default: the recipe's "
                                                  "'A photo of a hair.')")
    prompts_file: str | None = option(None, help="more prompts, one per line (blank lines skipped; a line \"\" "
                                                 "is the empty prompt)")
    taps: str = option("unet", help="the tap sets to try, comma-separated: unet, odise")
    views: str | None = option(None, help="the training split's views for every point (default: the recipe's; "
                                          "'none' for the images only)")
    scheduler: str | None = option(None, help="Dask: extract the points' stores on a cluster, local:N (N worker "
                                              "processes) or tcp://HOST:PORT; training and scoring stay here")
    stop_after: int | None = option(None, help="finish this many more points, then stop (the same command "
                                               "continues)")

    def __post_init__(self):
        super().__post_init__()  # dataset, limit, iters, ids files, device
        at_least(self, 1, "stop_after")
        self.grid_timesteps = parse_timesteps(self.timesteps)
        self.grid_taps = parse_taps(self.taps)
        prompts = list(self.prompts) if self.prompts is not None else []
        if self.prompts_file:
            from_file = read_prompts_file(self.prompts_file)
            if not from_file:
                raise UsageError(f"--prompts-file {self.prompts_file}: holds no prompt (one per line; a line \"\" "
                                 "is the empty prompt)")
            prompts += from_file
        elif self.prompts is None:
            prompts = [Recipe().prompt]
        if not prompts:
            raise UsageError("--prompts: no prompt given; pass one or more (\"\" is the empty prompt) or "
                             "--prompts-file")
        _no_twice("--prompts", prompts, prompts)
        self.grid_prompts = prompts
        if self.views is not None and self.views.lower() != "none":
            from hairdiff.extract.views import parse_views

            parse_views(self.views)
        if self.scheduler and not (re.fullmatch(r"local:[1-9]\d*", self.scheduler)
                                   or self.scheduler.startswith(("tcp://", "tls://"))):
            raise UsageError(f"--scheduler {self.scheduler!r}: use local:N (N worker processes) or tcp://HOST:PORT")

    @property
    def points(self) -> list[Point]:
        """The grid in a fixed order: prompt, then tap set, then timestep (a line of the plot at a time)."""
        return [Point(t, p, taps) for p in self.grid_prompts for taps in self.grid_taps for t in self.grid_timesteps]

    def reproduce_config(self) -> ReproduceConfig:
        return ReproduceConfig(dataset=self.dataset, root=self.root, model=self.model, out=self.out, limit=self.limit,
                               iters=self.iters, ids_train=self.ids_train, ids_test=self.ids_test,
                               cache_root=self.cache_root, device=self.device)

    @property
    def recipe(self) -> Recipe:
        """The shared recipe: reproduce's, with --views applied (the axes' fields are set per point)."""
        r = self.reproduce_config().recipe
        if self.views is None:
            return r
        return replace(r, views=None if self.views.lower() == "none" else self.views)

    def provenance(self) -> list[dict]:
        """Reproduce's table of sources, with the axes and --views said as such."""
        rows = self.reproduce_config().provenance()
        grid = {"timestep": self.grid_timesteps, "prompt": self.grid_prompts, "taps": self.grid_taps}
        full = Recipe()
        for row in rows:
            k = row["setting"]
            if k in grid:
                row.update(value=", ".join(map(repr, grid[k])) if k == "prompt" else ",".join(map(str, grid[k])),
                           source=SWEEP_AXIS, where=f"--{k}s (the recipe: {getattr(full, k)!r})" if k != "taps"
                           else f"--taps (the recipe: {full.taps!r})")
            elif k == "views" and self.views is not None:
                row.update(value=self.recipe.views, source=OPTION, where=f"--views (the recipe: {full.views})")
        return rows

    def shared_settings(self) -> dict:
        """What OUT/manifest.json binds: everything all points share (not the grid, the device or the cluster)."""
        ids = {part: _file_digest(p) for part, p in (("train", self.ids_train), ("test", self.ids_test)) if p}
        return {"dataset": self.dataset, "root": str(Path(self.root).resolve()), "model": self.model,
                "limit": self.limit, "ids": ids,
                "recipe": {k: v for k, v in self.recipe.as_dict().items() if k not in AXES}}


def _file_digest(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError as e:
        raise UsageError(f"{path}: cannot read it ({e.strerror}): pass an existing ids file") from None


# ---------------------------------------------------------------------------------------------- the run
def _row(p: Point, pdir: Path) -> dict:
    return {"name": p.name, **asdict(p), "status": "pending", "folder": str(pdir), "stores": {}, "store_bytes": {},
            "crop": None,
            "run": str(pdir / "run"), "eval": str(pdir / "eval"), "metrics": None,
            "seconds": {"extract": 0.0, "train": 0.0, "eval": 0.0},
            "reused": {"extract": False, "train": False, "eval": False},
            "work": {"computed": {}, "reused_samples": {}, "iterations": 0, "started_at_iteration": None}}


def _bind_point(cfg: SweepConfig, p: Point, pdir: Path) -> None:
    from hairdiff.core.manifest import bind

    bind(pdir, "sweep-point", {**cfg.shared_settings(), "point": asdict(p)},
         fix=f"delete {pdir} to compute this point again")


def _read_back(cfg: SweepConfig, p: Point, pdir: Path, log) -> dict | None:
    """A finished point's row from pdir/point.json (written after its eval), marked as reused; None when the
    point is not finished (or its record is damaged: then its eval is redone from its run, said in `log`).
    A point folder made with other settings is refused (OutputMismatchError), never read back."""
    path = pdir / "point.json"
    if not path.exists() or not (pdir / "eval" / "metrics.json").exists():
        return None
    _bind_point(cfg, p, pdir)
    try:
        row = json.loads(path.read_text())
        if not (isinstance(row, dict) and isinstance(row.get("metrics"), dict)):
            raise ValueError("not a point record")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        log(f"{path}: unreadable ({type(e).__name__}); scoring {p.name} again from its stores and run")
        return None
    row.update(status="done", reused={"extract": True, "train": True, "eval": True},
               work={"computed": {}, "reused_samples": {}, "iterations": 0, "started_at_iteration": None})
    return row


def _store_bytes(url: str) -> int | None:
    from hairdiff.core.urls import is_remote, local_path

    if is_remote(url):
        return None
    return sum(f.stat().st_size for f in Path(local_path(url)).rglob("*") if f.is_file())


def _labelled(progress: ProgressFactory, prefix: str) -> ProgressFactory:
    def factory(label: str, total: int, done: int = 0):
        return progress(f"{prefix}: {label}", total, done)

    return factory


def _point_extract_configs(cfg: SweepConfig, rcfg: ReproduceConfig, plan: dict, p: Point) -> dict:
    """The ExtractConfig of each part for point p: reproduce's, with the point's axes and the shared --views."""
    views = cfg.recipe.views
    return {part: replace(extract_config(rcfg, plan, part), timestep=p.timestep, prompt=p.prompt, taps=p.taps,
                          views=views if part == "train" else None)
            for part in ("train", "test")}


def sweep(cfg: SweepConfig, progress: ProgressFactory = silent, log=print, command: str = "the same command") -> dict:
    """Run (or resume) the grid; returns sweep.json's content. Ctrl-C is an Interrupted naming what was kept."""
    from hairdiff.core.manifest import bind
    from hairdiff.core.paths import check_output_dir

    t0 = time.perf_counter()
    out = Path(cfg.out)
    check_output_dir(out, "--out")
    rcfg = cfg.reproduce_config()
    settings = cfg.shared_settings()
    fix = "pass another --out, or the shared settings this folder was made with (the grid itself may change)"
    chosen = checked_splits(rcfg)  # reproduce's checks: --out outside stores, ids files, no test image trained on
    bind(out, "sweep", settings, fix=fix)  # refuses a changed folder before anything in it is written
    plan = _write_splits(chosen)
    points = cfg.points
    rows_pro = cfg.provenance()
    log(f"sweep of {len(points)} points ({len(cfg.grid_timesteps)} timesteps x {len(cfg.grid_prompts)} prompts x "
        f"{len(cfg.grid_taps)} tap sets); shared recipe (evaluate/recipes.py):")
    for line in table(rows_pro):
        log(line)
    log(f"splits: {plan['note']}")

    rows, todo = {}, []
    for p in points:
        pdir = out / "points" / p.name
        row = _read_back(cfg, p, pdir, log)
        if row is None:
            todo.append(p)
            row = _row(p, pdir)
        rows[p.name] = row
    if len(todo) < len(points):
        log(f"{len(points) - len(todo)} of {len(points)} points finished already: read back")
    if cfg.stop_after is not None:
        todo = todo[: cfg.stop_after]
    report = _report(cfg, plan, rows_pro, points, rows, t0)
    state = {"point": None, "stage": "setup"}
    try:
        pre_extracted = _extract_on_cluster(cfg, rcfg, plan, todo, state, progress, log) if (
            cfg.scheduler and todo) else {}
        for p in todo:
            state["point"] = p.name
            _run_point(cfg, rcfg, plan, p, rows[p.name], pre_extracted.get(p.name), state, progress, log)
            report = _report(cfg, plan, rows_pro, points, rows, t0)
            write_outputs(out, report)
    except KeyboardInterrupt:
        report = _report(cfg, plan, rows_pro, points, rows, t0)
        write_outputs(out, report)
        done = sum(r["status"] == "done" for r in rows.values())
        where = f" during {state['stage']}" + (f" of point {state['point']}" if state["point"] else "")
        raise Interrupted(f"interrupted{where}: {done} of {len(points)} points are finished and kept in {out} "
                          f"(sweep.json lists them); the stores keep every computed sample and each run its last "
                          f"checkpoint: run {command} again to continue") from None
    report = _report(cfg, plan, rows_pro, points, rows, t0)
    write_outputs(out, report)
    return report


def _extract_on_cluster(cfg, rcfg, plan, todo, state, progress, log) -> dict:
    """Every unfinished point's stores on the Dask cluster at once; {point name: {part: ExtractStats}}."""
    from hairdiff.extract.distributed import run_many
    from hairdiff.extract.runner import ExtractStats

    state["stage"] = f"extraction on {cfg.scheduler}"
    jobs = [(p, part, c) for p in todo for part, c in _point_extract_configs(cfg, rcfg, plan, p).items()]
    stats = [ExtractStats() for _ in jobs]
    log(f"extracting {len(jobs)} stores of {len(todo)} points on {cfg.scheduler} ...")
    run_many([c for _, _, c in jobs], stats, cfg.scheduler, progress=progress, log=log)
    found: dict = {}
    for (p, part, _), s in zip(jobs, stats):
        found.setdefault(p.name, {})[part] = s
    return found


def _run_point(cfg, rcfg, plan, p: Point, row: dict, extracted: dict | None, state, progress, log) -> None:
    from hairdiff.core.devices import resolve_device
    from hairdiff.evaluate.config import EvalConfig
    from hairdiff.evaluate.run import evaluate_run
    from hairdiff.extract.runner import ExtractStats, run_local
    from hairdiff.train.checkpoint import read_run_json
    from hairdiff.train.loop import train

    pdir = Path(row["folder"])
    _bind_point(cfg, p, pdir)
    labelled = _labelled(progress, p.name)
    log(f"point {p.name}: timestep {p.timestep}, prompt {p.prompt!r}, taps {p.taps}")
    state["stage"] = "extraction"
    t = time.perf_counter()
    for part, ecfg in _point_extract_configs(cfg, rcfg, plan, p).items():
        stats = (extracted or {}).get(part)
        if stats is None:
            stats = ExtractStats()
            run_local(ecfg, stats, progress=labelled, log=log)
        row["stores"][part] = stats.store
        row["store_bytes"][part] = _store_bytes(stats.store)
        row["work"]["computed"][part] = stats.computed
        row["work"]["reused_samples"][part] = stats.reused
        log(f"  {part} store: computed {stats.computed}, reused {stats.reused}: {stats.store}")
    # On a cluster: the wall time from the submission until both of the point's stores were complete.
    row["seconds"]["extract"] = round(time.perf_counter() - t + max(
        (s.seconds for s in (extracted or {}).values()), default=0.0), 2)
    row["reused"]["extract"] = not any(row["work"]["computed"].values())

    state["stage"] = "training"
    run, iters = pdir / "run", cfg.recipe.iters
    tcfg = train_config(rcfg, row["stores"]["train"], run)
    crop = fitted_crop(tcfg.crop, row["stores"]["train"])
    if crop != tcfg.crop:
        log(f"  crop {crop} instead of the recipe's {tcfg.crop}: this point's coarsest stored stride does not divide "
            f"{tcfg.crop}")
        tcfg = replace(tcfg, crop=crop)
    row["crop"] = crop
    finished_before = (run / "run.json").exists() and read_run_json(run).get("iterations") == iters
    t = time.perf_counter()
    summary = train(tcfg, device=str(resolve_device(cfg.device)), progress=labelled)
    row["seconds"]["train"] = round(time.perf_counter() - t, 2)
    row["reused"]["train"] = finished_before
    if finished_before:
        log(f"  {run} finished its {iters} iterations already")
    else:
        start = summary.get("started_at_iteration", 0)
        row["work"].update(iterations=summary["iterations"] - start, started_at_iteration=start)
        log(f"  trained iterations {start}..{summary['iterations']}" + (f" (resumed from {summary['resumed_from']})"
                                                                       if summary.get("resumed_from") else ""))

    state["stage"] = "scoring"
    t = time.perf_counter()
    metrics = evaluate_run(EvalConfig(run=str(run), cache=row["stores"]["test"], out=row["eval"], device=cfg.device,
                                      overlays=2), progress=labelled)
    row["seconds"]["eval"] = round(time.perf_counter() - t, 2)
    row["metrics"] = {**{k: metrics.get(k) for k in (*METRIC_KEYS, "boundary_f", "images")},
                      "per_image_mean": {k: metrics["per_image_mean"].get(k) for k in METRIC_KEYS}}
    row["train"] = {k: summary.get(k) for k in ("iterations", "final_loss", "images_per_s")}
    row["status"] = "done"
    # Written last: its presence (with eval/metrics.json) is what makes the point finished.
    atomic_write_json(pdir / "point.json", {k: v for k, v in row.items() if k not in ("status",)}, indent=2)
    m = row["metrics"]
    log(f"  {p.name}: mIoU {m['mIoU']:.2f}, hair IoU {m['hair_iou']:.2f} ({m['images']} test images)")


def fitted_crop(crop: int | None, store_url: str) -> int | None:
    """The recipe's crop, rounded down to a multiple of the store's coarsest stride when it is not one (the
    smoke recipe's 96 with the stride-64 `odise` taps: 64), so every tap set of a grid trains; None stays None."""
    from hairdiff.cache import FeatureStore

    if crop is None:
        return None
    store = FeatureStore.open(store_url)
    step = max(int(lv.stride) for lv in store.levels)
    if crop % step == 0 and step <= crop <= store.resolution:
        return crop
    return max(step, min(crop, store.resolution) // step * step) if step <= store.resolution else None


# -------------------------------------------------------------------------------------------- the outputs
def _best(rows: list[dict]) -> str | None:
    done = [r for r in rows if r["status"] == "done" and isinstance(r["metrics"].get("mIoU"), (int, float))
            and not math.isnan(r["metrics"]["mIoU"])]
    return max(done, key=lambda r: r["metrics"]["mIoU"])["name"] if done else None


def _report(cfg: SweepConfig, plan: dict, provenance_rows: list[dict], points: list[Point], rows: dict,
            t0: float) -> dict:
    ordered = [rows[p.name] for p in points]
    return {"dataset": cfg.dataset, "root": str(Path(cfg.root).resolve()), "model": cfg.model,
            "random_weights": cfg.model == "tiny", "limit": cfg.limit, "splits": plan["note"],
            "grid": {"timesteps": cfg.grid_timesteps, "prompts": cfg.grid_prompts, "taps": cfg.grid_taps},
            "recipe": cfg.recipe.as_dict(), "provenance": provenance_rows, "scheduler": cfg.scheduler,
            "points": ordered, "best": _best(ordered),
            "finished": sum(r["status"] == "done" for r in ordered), "total": len(ordered),
            "seconds": round(time.perf_counter() - t0, 2)}


def write_outputs(out: Path, report: dict) -> None:
    """sweep.json, sweep.md and (once a point is finished) sweep.png."""
    atomic_write_json(out / "sweep.json", report, indent=2)
    atomic_write(out / "sweep.md", markdown(report))
    if report["finished"]:
        plot(report, out / "sweep.png")


def _prompt_label(prompt: str) -> str:
    return repr(prompt) if prompt else '"" (empty)'


def _f(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def markdown(report: dict) -> str:
    lines = [f"# Sweep: {report['dataset']}, {report['model']}", "",
             f"{report['finished']} of {report['total']} points finished. Splits: {report['splits']}."
             + (f" Limited to the first {report['limit']} images of each split." if report["limit"] else ""), ""]
    if report["random_weights"]:
        lines += ["**Smoke run with the random-weight `tiny` model: these numbers show that every step runs, "
                  "they say nothing about the method.**", ""]
    lines += ["Pooled over the test split (per-image mean mIoU beside it); seconds per stage of the run that "
              "computed the point; `reused` lists the stages found done.", "",
              "| best | timestep | prompt | taps | mIoU | hair IoU | F1 | accuracy | precision | per-image mIoU | "
              "crop | extract s | train s | eval s | reused | point |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["points"]:
        m = r["metrics"] or {}
        reused = ",".join(k for k, v in r["reused"].items() if v) or "-"
        s = r["seconds"]
        lines.append(f"| {'**best**' if r['name'] == report['best'] else ''} | {r['timestep']} | "
                     f"{_prompt_label(r['prompt'])} | {r['taps']} | {_f(m.get('mIoU'))} | {_f(m.get('hair_iou'))} | "
                     f"{_f(m.get('f1'))} | {_f(m.get('accuracy'))} | {_f(m.get('precision'))} | "
                     f"{_f((m.get('per_image_mean') or {}).get('mIoU'))} | {r.get('crop') or '-'} | "
                     f"{s['extract']} | {s['train']} | "
                     f"{s['eval']} | {reused} | `{r['name']}`" + (" (pending)" if r["status"] != "done" else "")
                     + " |")
    lines += ["", "## Shared settings", "", "Where each setting comes from (evaluate/recipes.py); the rows marked "
              f"`{SWEEP_AXIS}` are this grid's.", ""]
    lines += table(report["provenance"])
    lines += ["", f"Total {report['seconds']} s in this run.", ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> Path:
    """mIoU (left) and hair IoU (right) against the timestep: a line per prompt x tap set."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    done = [r for r in report["points"] if r["status"] == "done"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    lines: dict = {}
    for r in done:
        lines.setdefault((r["prompt"], r["taps"]), []).append(r)
    for (prompt, taps), rs in lines.items():
        rs = sorted(rs, key=lambda r: r["timestep"])
        for ax, key in zip(axes, ("mIoU", "hair_iou")):
            ax.plot([r["timestep"] for r in rs], [r["metrics"][key] for r in rs], marker="o",
                    label=f"{_prompt_label(prompt)} / {taps}")
    for ax, title in zip(axes, ("mIoU (pooled, %)", "hair IoU (pooled, %)")):
        ax.set_xlabel("timestep")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, title="prompt / taps", title_fontsize=7)
    if report["random_weights"]:
        fig.suptitle("random-weight tiny model: the numbers say nothing about the method", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
