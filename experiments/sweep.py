"""`pipeline sweep`: the paper's choice of timestep and prompt (and the tap set), checked on one grid.

Every point of the grid (timestep x prompt x tap set) is `pipeline reproduce`'s chain with those three
extraction settings changed: the train and test stores (reused from the cache root when they exist: the
fingerprint keys timestep, prompt and taps), the recipe's head trained with the same seed, scored on the test
split. Everything else is shared by all points: the recipe of core/recipe.py, with --iters, --limit and
--views overrides. Outputs: OUT/points/<name>/{run,eval}, OUT/sweep.json (a row per point), OUT/sweep.md (the
table, best point marked) and OUT/sweep.png (mIoU and hair IoU against the timestep).

Resuming: OUT/manifest.json binds the folder to the shared settings (core/manifest.py): a run with other shared
settings is refused naming what differs, while the grid itself may change (points are added or dropped; each
point's folder is named for and bound to its own settings); a folder holding results without its record is
refused whole. A finished point (point.json written after its eval, or after its training diverged, which the
sweep records and goes on from) is read back while its receipt holds (experiments/receipts.py: the files it
stands for and its stores, unchanged) and its stores hold the images --root holds now; otherwise it is
computed again, or refused. An unfinished one continues from its stores and its run's last checkpoint.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from hairdiff.cache import FeatureStore
from hairdiff.core.errors import Interrupted, OutputMismatchError, RunDirError, TrainingDiverged
from hairdiff.core.files import atomic_write, atomic_write_json
from hairdiff.core.manifest import bind
from hairdiff.core.paths import check_output_dir
from hairdiff.core.progress import ProgressFactory, silent
from hairdiff.core.urls import is_remote, local_path
from hairdiff.evaluate.report import interval_of, with_interval
from hairdiff.experiments import receipts
from hairdiff.experiments.chain import (checked_splits, extract_config, extract_store, finished, score_run,
                                        summary_metrics, train_config, train_run, write_splits)
from hairdiff.experiments.config import SWEEP_AXIS, Point, SweepConfig
from hairdiff.experiments.recipes import table
from hairdiff.extract.backbone import sharing_backbones
from hairdiff.extract.distributed import run_many
from hairdiff.extract.runner import ExtractStats, list_refs
from hairdiff.extract.sources import data_key


# ---------------------------------------------------------------------------------------------- the run
def _row(p: Point, pdir: Path) -> dict:
    return {"name": p.name, **asdict(p), "status": "pending", "folder": str(pdir), "stores": {}, "store_bytes": {},
            "crop": None,
            "run": str(pdir / "run"), "eval": str(pdir / "eval"), "metrics": None,
            "seconds": {"extract": 0.0, "train": 0.0, "eval": 0.0},
            "reused": {"extract": False, "train": False, "eval": False},
            "work": {"computed": {}, "reused_samples": {}, "iterations": 0, "started_at_iteration": None}}


POINT_OUTPUTS = ("run", "eval", "point.json")  # a point folder holding these must hold their record
OUTPUTS = ("points", "splits", "sweep.json", "sweep.md", "sweep.png")
# What a finished point stands for, by outcome: the files its receipt (experiments/receipts.py) digests.
CLAIMED = {"done": ("run/run.json", "run/head.safetensors", "eval/metrics.json"),
           "diverged": ("run/config.json", "run/log.jsonl")}


def _bind_point(cfg: SweepConfig, p: Point, pdir: Path) -> None:
    bind(pdir, "sweep-point", {**cfg.shared_settings(), "point": asdict(p)},
         fix=f"delete {pdir} to compute this point again", outputs=POINT_OUTPUTS)


def _record(row: dict, outcome: str) -> dict:
    """point.json: the row, its outcome and its receipt (written last: it makes the point finished)."""
    pdir = Path(row["folder"])
    return {**{k: v for k, v in row.items() if k != "status"}, "outcome": outcome,
            "receipt": receipts.receipt(pdir, CLAIMED[outcome], row["stores"])}


def _read_back(cfg: SweepConfig, p: Point, pdir: Path, data: Callable[[], dict], log) -> dict | None:
    """A finished point's row from pdir/point.json, marked as reused; None when the point is to be computed:
    not finished, its record damaged, or what its receipt claims no longer holds (retrained, rescored or edited
    by hand, a store gone: said in `log`). Its paths are where the folder is now. A point trained on other
    images than --root holds now is refused (OutputMismatchError), as is a folder made with other settings."""
    path = pdir / "point.json"
    if not path.exists():
        return None
    try:
        row = json.loads(path.read_text())
        outcome = row.get("outcome", "done") if isinstance(row, dict) else None
        if outcome not in CLAIMED or (outcome == "done" and not isinstance(row.get("metrics"), dict)):
            raise ValueError("not a point record")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        log(f"{path}: unreadable ({type(e).__name__}); computing {p.name} again from its stores and run")
        return None
    wrong = receipts.problems(pdir, row.get("receipt"))
    if wrong:
        log(f"{path}: {'; '.join(wrong)}: computing {p.name} again from its stores and run")
        return None
    _check_data(p, pdir, row["receipt"]["stores"], data())
    here = {k: v for k, v in _row(p, pdir).items() if k in ("folder", "run", "eval")}
    if any(row.get(k) != v for k, v in here.items()):  # the folder moved: report where it is now
        row.update(here)
        atomic_write_json(path, row, indent=2)
    row.update(status=outcome, reused={"extract": True, "train": True, "eval": outcome == "done"},
               work={"computed": {}, "reused_samples": {}, "iterations": 0, "started_at_iteration": None})
    return row


def _check_data(p: Point, pdir: Path, stores: dict, now: dict) -> None:
    """OutputMismatchError unless the point's stores hold the images --root holds now (their data keys)."""
    for part, store in stores.items():
        if part in now and store.get("data_key") and store["data_key"] != now[part]:
            raise OutputMismatchError(
                f"{pdir}: point {p.name} was trained and scored on other {part} images than --root holds now (data "
                f"{str(store['data_key'])[:16]} -> {now[part][:16]}): delete {pdir} to compute this point again, or "
                f"pass another --out")


def _data_keys(cfg: SweepConfig, plan: dict) -> dict:
    """The data key of each part's images as they are now (memoised digests: a stat per file)."""
    return {part: data_key(list_refs(extract_config(cfg, plan, part))[1]) for part in ("train", "test")}


def _store_bytes(url: str) -> int | None:
    if is_remote(url):
        return None
    return sum(f.stat().st_size for f in Path(local_path(url)).rglob("*") if f.is_file())


def _labelled(progress: ProgressFactory, prefix: str) -> ProgressFactory:
    def factory(label: str, total: int, done: int = 0):
        return progress(f"{prefix}: {label}", total, done)

    return factory


def _point_extract_configs(cfg: SweepConfig, plan: dict, p: Point) -> dict:
    """The ExtractConfig of each part for point p: the chain's (with the shared --views), the point's axes set."""
    return {part: replace(extract_config(cfg, plan, part), timestep=p.timestep, prompt=p.prompt, taps=p.taps)
            for part in ("train", "test")}


def sweep(cfg: SweepConfig, progress: ProgressFactory = silent, log=print, command: str = "the same command") -> dict:
    """Run (or resume) the grid; returns sweep.json's content. Ctrl-C is an Interrupted naming what was kept."""
    t0 = time.perf_counter()
    out = Path(cfg.out)
    check_output_dir(out, "--out")
    fix = "pass another --out, or the shared settings this folder was made with (the grid itself may change)"
    chosen = checked_splits(cfg.reproduce_config())  # --out outside stores, ids files, no test image trained on
    bind(out, "sweep", cfg.shared_settings(), fix=fix, outputs=OUTPUTS)  # before anything in OUT is written
    plan = write_splits(chosen)
    points, rows_pro = cfg.points, cfg.provenance()
    log(f"sweep of {len(points)} points ({len(cfg.grid_timesteps)} timesteps x {len(cfg.grid_prompts)} prompts x "
        f"{len(cfg.grid_taps)} tap sets); shared recipe (core/recipe.py):")
    for line in table(rows_pro):
        log(line)
    log(f"splits: {plan['note']}")
    rows, todo = _rows(cfg, plan, points, out, log)

    def report() -> dict:
        return _report(cfg, plan, rows_pro, points, rows, t0)

    state = {"point": None, "stage": "setup"}
    try:
        pre_extracted = _extract_on_cluster(cfg, plan, todo, state, progress, log) if cfg.scheduler and todo else {}
        with sharing_backbones():  # the points' stores from one loaded backbone
            for p in todo:
                state["point"] = p.name
                try:
                    _run_point(cfg, plan, p, rows[p.name], pre_extracted.get(p.name), state, progress, log)
                except TrainingDiverged as e:  # that point's result: recorded, and the grid goes on
                    _diverged(rows[p.name], e, log)
                write_outputs(out, report())
    except KeyboardInterrupt:
        write_outputs(out, report())
        done = sum(r["status"] == "done" for r in rows.values())
        where = f" during {state['stage']}" + (f" of point {state['point']}" if state["point"] else "")
        raise Interrupted(f"interrupted{where}: {done} of {len(points)} points are finished and kept in {out} "
                          f"(sweep.json lists them); the stores keep every computed sample and each run its last "
                          f"checkpoint: run {command} again to continue") from None
    final = report()
    write_outputs(out, final)
    return final


def _rows(cfg: SweepConfig, plan: dict, points: list[Point], out: Path, log) -> tuple[dict, list[Point]]:
    """Every point's row (finished ones read back and checked) and the points still to run (at most
    --stop-after). Every existing point folder is checked against its record here, before any point runs."""
    rows, todo, keys = {}, [], {}

    def data() -> dict:  # computed once, and only when a finished point is read back
        if not keys:
            keys.update(_data_keys(cfg, plan))
        return keys

    for p in points:
        pdir = out / "points" / p.name
        if pdir.exists():
            _bind_point(cfg, p, pdir)
        row = _read_back(cfg, p, pdir, data, log)
        if row is None:
            todo.append(p)
            row = _row(p, pdir)
        rows[p.name] = row
    if len(todo) < len(points):
        log(f"{len(points) - len(todo)} of {len(points)} points finished already: read back")
    return rows, todo if cfg.stop_after is None else todo[: cfg.stop_after]


def _extract_on_cluster(cfg, plan, todo, state, progress, log) -> dict:
    """Every unfinished point's stores on the Dask cluster at once; {point name: {part: ExtractStats}}."""
    state["stage"] = f"extraction on {cfg.scheduler}"
    jobs = [(p, part, c) for p in todo for part, c in _point_extract_configs(cfg, plan, p).items()]
    stats = [ExtractStats() for _ in jobs]
    log(f"extracting {len(jobs)} stores of {len(todo)} points on {cfg.scheduler} ...")
    run_many([c for _, _, c in jobs], stats, cfg.scheduler, progress=progress, log=log)
    found: dict = {}
    for (p, part, _), s in zip(jobs, stats):
        found.setdefault(p.name, {})[part] = s
    return found


def _run_point(cfg, plan, p: Point, row: dict, extracted: dict | None, state, progress, log) -> None:
    """One point through the chain: its stores, its run, its scores; point.json written last."""
    pdir = Path(row["folder"])
    _bind_point(cfg, p, pdir)
    labelled = _labelled(progress, p.name)
    log(f"point {p.name}: timestep {p.timestep}, prompt {p.prompt!r}, taps {p.taps}")
    state["stage"] = "extraction"
    _point_stores(cfg, plan, p, row, extracted or {}, labelled, log)
    state["stage"] = "training"
    summary = _point_run(cfg, pdir / "run", row, labelled, log)
    state["stage"] = "scoring"
    t = time.perf_counter()
    metrics = score_run(pdir / "run", row["stores"]["test"], Path(row["eval"]), cfg.device, overlays=2,
                        progress=labelled)
    row["seconds"]["eval"] = round(time.perf_counter() - t, 2)
    row["metrics"] = summary_metrics(metrics)
    row["train"] = {k: summary.get(k) for k in ("iterations", "final_loss", "images_per_s")}
    row["status"] = "done"
    # Written last: its presence, with its receipt holding, is what makes the point finished.
    atomic_write_json(pdir / "point.json", _record(row, "done"), indent=2)
    m = row["metrics"]
    log(f"  {p.name}: mIoU {m['mIoU']:.2f}, hair IoU {m['hair_iou']:.2f} ({m['images']} test images)")


def _diverged(row: dict, e: TrainingDiverged, log) -> None:
    """A point whose training diverged: recorded as such (point.json), so the grid goes on and a rerun reads it
    back instead of training it into the same divergence."""
    pdir = Path(row["folder"])
    row.update(status="diverged", metrics=None, diverged=str(e))
    atomic_write_json(pdir / "point.json", _record(row, "diverged"), indent=2)
    log(f"  {row['name']}: training diverged ({e}); recorded as diverged, the sweep goes on (delete {pdir} to "
        f"train this point again)")


def _point_stores(cfg, plan, p: Point, row: dict, extracted: dict, progress, log) -> None:
    """The point's train and test stores (extracted here unless the cluster did), recorded in its row."""
    t = time.perf_counter()
    for part, ecfg in _point_extract_configs(cfg, plan, p).items():
        stats = extracted.get(part) or extract_store(ecfg, progress, log)
        row["stores"][part] = stats.store
        row["store_bytes"][part] = _store_bytes(stats.store)
        row["work"]["computed"][part] = stats.computed
        row["work"]["reused_samples"][part] = stats.reused
        log(f"  {part} store: computed {stats.computed}, reused {stats.reused}: {stats.store}")
    # On a cluster: the wall time from the submission until both of the point's stores were complete.
    row["seconds"]["extract"] = round(time.perf_counter() - t + max(
        (s.seconds for s in extracted.values()), default=0.0), 2)
    row["reused"]["extract"] = not any(row["work"]["computed"].values())


def _point_run(cfg, run: Path, row: dict, progress, log) -> dict:
    """The point's head trained (or resumed, or found finished) on its training store; the run's summary."""
    iters = cfg.recipe.iters
    tcfg = train_config(cfg, row["stores"]["train"], run)
    crop = fitted_crop(tcfg.crop, row["stores"]["train"])
    if crop != tcfg.crop:
        log(f"  crop {crop} instead of the recipe's {tcfg.crop}: this point's coarsest stored stride does not divide "
            f"{tcfg.crop}")
        tcfg = replace(tcfg, crop=crop)
    row["crop"] = crop
    finished_before = finished(run, iters)
    t = time.perf_counter()
    try:
        summary = train_run(tcfg, cfg.device, progress)
    except RunDirError as e:  # the run folder holds a run of other settings or data (trained there by hand)
        raise OutputMismatchError(f"point {row['name']}: {e} (for this sweep: delete {run.parent} to compute this "
                                  "point again)") from None
    row["seconds"]["train"] = round(time.perf_counter() - t, 2)
    row["reused"]["train"] = finished_before
    if finished_before:
        log(f"  {run} finished its {iters} iterations already")
    else:
        start = summary.get("started_at_iteration", 0)
        row["work"].update(iterations=summary["iterations"] - start, started_at_iteration=start)
        log(f"  trained iterations {start}..{summary['iterations']}" + (f" (resumed from {summary['resumed_from']})"
                                                                       if summary.get("resumed_from") else ""))
    return summary


def fitted_crop(crop: int | None, store_url: str) -> int | None:
    """The recipe's crop, rounded down to a multiple of the store's coarsest stride when it is not one (the
    smoke recipe's 96 with the stride-64 `odise` taps: 64), so every tap set of a grid trains; None stays None."""
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


def miou_interval(row: dict) -> list[float] | None:
    """A finished point's 95% interval of pooled mIoU (None for a point scored before intervals existed)."""
    return interval_of(row.get("metrics") or {}, "pooled", "mIoU")


def versus_best(rows: list[dict], best: str | None) -> dict[str, str | None]:
    """Each point against the best (by pooled mIoU): "best"; "indistinguishable" where its 95% interval
    overlaps the best's (these test images cannot tell them apart); "worse" where it lies wholly below; None
    for a point without an interval (or unfinished)."""
    by_name = {r["name"]: r for r in rows}
    top = miou_interval(by_name[best]) if best else None
    marks: dict[str, str | None] = {}
    for r in rows:
        iv = miou_interval(r) if r["status"] == "done" else None
        if r["name"] == best:
            marks[r["name"]] = "best"
        elif iv is None or top is None:
            marks[r["name"]] = None
        else:
            marks[r["name"]] = "indistinguishable" if iv[1] >= top[0] and top[1] >= iv[0] else "worse"
    return marks


def _report(cfg: SweepConfig, plan: dict, provenance_rows: list[dict], points: list[Point], rows: dict,
            t0: float) -> dict:
    best = _best([rows[p.name] for p in points])
    marks = versus_best([rows[p.name] for p in points], best)
    ordered = [{**rows[p.name], "versus_best": marks[p.name]} for p in points]
    done = [r for r in ordered if r["status"] == "done"]
    return {"dataset": cfg.dataset, "root": str(Path(cfg.root).resolve()), "model": cfg.model,
            "random_weights": cfg.model == "tiny", "limit": cfg.limit, "splits": plan["note"],
            "grid": {"timesteps": cfg.grid_timesteps, "prompts": cfg.grid_prompts, "taps": cfg.grid_taps},
            "recipe": cfg.recipe.as_dict(), "provenance": provenance_rows, "scheduler": cfg.scheduler,
            "points": ordered, "best": best,
            "indistinguishable_from_best": [r["name"] for r in ordered if r["versus_best"] == "indistinguishable"],
            "test_images": max((r["metrics"].get("images") or 0 for r in done), default=None),
            "interval_rule": "a point is indistinguishable from the best when its 95% interval of pooled mIoU "
                             "(bootstrap over the test images) overlaps the best's",
            "finished": sum(r["status"] == "done" for r in ordered), "total": len(ordered),
            "diverged": [r["name"] for r in ordered if r["status"] == "diverged"],
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
             f"{report['finished']} of {report['total']} points finished"
             + (f", {len(report['diverged'])} diverged in training (no scores)" if report["diverged"] else "")
             + f". Splits: {report['splits']}."
             + (f" Limited to the first {report['limit']} images of each split." if report["limit"] else ""), ""]
    if report["random_weights"]:
        lines += ["**Smoke run with the random-weight `tiny` model: these numbers show that every step runs, "
                  "they say nothing about the method.**", ""]
    n = report.get("test_images") or "scored"
    lines += ["Pooled over the test split (per-image mean mIoU beside it), mIoU with its 95% interval (a bootstrap "
              f"over the {n} test images); seconds per stage of the run that computed the point; `reused` lists the "
              "stages found done.", "",
              f"**best**: the highest pooled mIoU. **~ best**: its interval overlaps the best's, so it is not "
              f"distinguishable from the best on {n} images ({len(report.get('indistinguishable_from_best', []))} "
              "such points); a narrower question, is X better than Y, is `pipeline compare OUT/points/X "
              "OUT/points/Y` (a paired interval of the difference).", "",
              "| best | timestep | prompt | taps | mIoU [95%] | hair IoU | F1 | accuracy | precision | "
              "per-image mIoU | crop | extract s | train s | eval s | reused | point |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    marks = {"best": "**best**", "indistinguishable": "~ best"}
    for r in report["points"]:
        m = r["metrics"] or {}
        reused = ",".join(k for k, v in r["reused"].items() if v) or "-"
        s = r["seconds"]
        mark = marks.get(r.get("versus_best") or "", "")
        lines.append(f"| {mark} | {r['timestep']} | "
                     f"{_prompt_label(r['prompt'])} | {r['taps']} | {with_interval(m.get('mIoU'), miou_interval(r))} | "
                     f"{_f(m.get('hair_iou'))} | "
                     f"{_f(m.get('f1'))} | {_f(m.get('accuracy'))} | {_f(m.get('precision'))} | "
                     f"{_f((m.get('per_image_mean') or {}).get('mIoU'))} | {r.get('crop') or '-'} | "
                     f"{s['extract']} | {s['train']} | "
                     f"{s['eval']} | {reused} | `{r['name']}`" + ("" if r["status"] == "done" else f" ({r['status']})")
                     + " |")
    lines += ["", "## Shared settings", "", "Where each setting comes from (core/recipe.py); the rows marked "
              f"`{SWEEP_AXIS}` are this grid's.", ""]
    lines += table(report["provenance"])
    lines += ["", f"Total {report['seconds']} s in this run.", ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> Path:
    """mIoU (left) and hair IoU (right) against the timestep: a line per prompt x tap set, each point with its
    95% interval as an error bar; the best point starred, the points indistinguishable from it ringed."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    done = [r for r in report["points"] if r["status"] == "done"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    lines: dict = {}
    for r in done:
        lines.setdefault((r["prompt"], r["taps"]), []).append(r)
    # Lines side by side at each timestep (a small shift), so their error bars do not hide each other.
    steps = [r["timestep"] for r in done]
    shift = 0.012 * ((max(steps) - min(steps)) or 1) if done else 0.0
    at: dict = {}
    for i, ((prompt, taps), rs) in enumerate(lines.items()):
        rs = sorted(rs, key=lambda r: r["timestep"])
        dx = (i - (len(lines) - 1) / 2) * shift
        at.update({r["name"]: r["timestep"] + dx for r in rs})
        for ax, key in zip(axes, ("mIoU", "hair_iou")):
            x, y = [r["timestep"] + dx for r in rs], [r["metrics"][key] for r in rs]
            ax.errorbar(x, y, yerr=_error_bars(rs, key), marker="o", capsize=3,
                        label=f"{_prompt_label(prompt)} / {taps}")
    for r in done:
        mark = r.get("versus_best")
        if mark in ("best", "indistinguishable"):
            axes[0].scatter([at[r["name"]]], [r["metrics"]["mIoU"]], s=220 if mark == "best" else 160,
                            marker="*" if mark == "best" else "o", facecolors="none", edgecolors="black", zorder=3)
    for ax, title in zip(axes, ("mIoU (pooled, %)", "hair IoU (pooled, %)")):
        ax.set_xlabel("timestep")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, title="prompt / taps", title_fontsize=7)
    n = report.get("test_images")
    axes[0].text(0.01, 0.01, f"bars: 95% intervals ({n} test images); star: best; ring: not distinguishable "
                             "from the best", transform=axes[0].transAxes, fontsize=7, va="bottom")
    if report["random_weights"]:
        fig.suptitle("random-weight tiny model: the numbers say nothing about the method", fontsize=9)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.88, wspace=0.2)  # tight_layout: ~1 s a plot
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _error_bars(rows: list[dict], key: str):
    """matplotlib's yerr: (2, n) distances below and above each value (0 where a point has no interval)."""
    below, above = [], []
    for r in rows:
        iv = interval_of(r["metrics"], "pooled", key)
        v = r["metrics"][key]
        below.append(max(v - iv[0], 0.0) if iv else 0.0)
        above.append(max(iv[1] - v, 0.0) if iv else 0.0)
    return [below, above]
