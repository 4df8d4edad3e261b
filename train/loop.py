"""The training loop: cached features -> Mask2Former head, AdamW + poly LR, checkpoints, exact resume.

The iteration itself is train/step.py (TrainStep): nothing in it waits for the device. Its statistics
stay on the device (StepLog) and are read once per `--log-every` iterations and before every checkpoint
and validation: log.jsonl still gets one row per iteration (written at the read; images_per_s is the
interval's mean, per-iteration host times say nothing of an asynchronous device), and a non-finite loss
or gradient norm found at a read stops the run naming its first iteration, before any checkpoint could
hold the weights it produced.

Exactness: everything random in an iteration is derived from (seed, iteration, global sample index):
the sample order (train/data.py) and the criterion's point sampling (one draw per iteration for the
global batch, each process keeping its samples' rows). So a resumed run, and a run split over K
processes, see the same numbers as one uninterrupted process (up to the order of floating-point sums
across processes). On CPU the kernels are deterministic (torch.use_deterministic_algorithms), which makes
resume bit-for-bit.

Loss normalisation: Mask2Former's (mask2former/batch_criterion.py): the mask terms are summed over the
global batch's matched masks and divided by its number of target masks, the class cross-entropy is the
weighted mean over the global batch; under DDP the denominators are all-reduced (DistContext.mean), so a
split batch trains as one process would. Runs begun before this (hairdiff's per-image normalisation,
each image's mask terms over its own masks, then the mean over images) record no `loss` rule: a checkpoint
of one is not resumed (its curve would change rule mid-run), a finished one is still read. The per-image
path survives only as bench/head_speed.py's "old step" (criterion.per_sample_loss): nothing trains with it.

Optimizer: AdamW with no weight decay on normalisation layers and embeddings, as Mask2Former's
build_optimizer (train/optim.py says what counts).

Crops (`--crop`) and validation (`--val`): train/augment.py and train/validation.py.

Gradient clipping: Mask2Former clips the full model's gradient norm to 0.01. With AdamW this does not
shrink the step (Adam divides by the running gradient scale); it turns every step into a unit-norm
direction, so one batch with a huge gradient (an early Hungarian assignment flip) cannot swamp the
moment estimates. We keep 0.01 as the default for parity with the published recipe.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from hairdiff.cache import FeatureStore
from hairdiff.cache.distinct import check_distinct, images, same_location
from hairdiff.core.errors import RunDirError, RunFileError, StoreMismatchError, TrainingDiverged, UsageError
from hairdiff.core.files import atomic_write_json
from hairdiff.core.progress import ProgressFactory, silent
from hairdiff.core.versions import versions
from hairdiff.model.best import BEST_DIR, METRIC, read_best, save_best
from hairdiff.model.checkpoints import latest_checkpoint, read_checkpoint_state
from hairdiff.model.finite import nonfinite_count, value_count
from hairdiff.model.mask2former.batch_criterion import build_batch_criterion
from hairdiff.model.mask2former.head import Mask2FormerHead
from hairdiff.model.mask2former.targets import check_label_values
from hairdiff.model.records import check_weights
from hairdiff.model.trained import FIX_FINAL, head_config_from_dict, head_config_to_dict, read_run_json, write_final
from hairdiff.model.trained_images import TRAINED_IMAGES, record_trained_images
from hairdiff.train.augment import check_crop, crop_batch
from hairdiff.train.checkpoint import check_optimizer_format, load_checkpoint, save_checkpoint
from hairdiff.train.config import RESUME_KEYS, TrainConfig
from hairdiff.train.data import BatchStream, CachedFeatures, Position
from hairdiff.train.distributed import DistContext
from hairdiff.train.optim import build_optimizer
from hairdiff.train.run_lock import hold_run_dir
from hairdiff.train.schedule import set_lr
from hairdiff.train.step import StepLog, TrainStep, first_divergence
from hairdiff.train.validation import Validation

# How the loss is normalised (above); a checkpoint recording another rule (or none: runs before it) is not resumed.
LOSS_RULE = "mask2former-global-batch"
RUN_FILES = ("run.json", "head.safetensors", "log.jsonl", "config.json", "curves.png", "checkpoints", BEST_DIR,
             TRAINED_IMAGES)


# ------------------------------------------------------------------------------------------- helpers


def _prepare_run_dir(out: Path, resume: bool, overwrite: bool) -> None:
    present = [n for n in RUN_FILES if (out / n).exists()]
    if present and not (resume or overwrite):
        raise RunDirError(f"{out} already holds a training run ({', '.join(present)}): pass --resume to continue "
                          f"it, --overwrite to start it again, or choose another --out")
    if overwrite and not resume:
        for n in present:
            p = out / n
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _truncate_log(log_path: Path, upto: int) -> None:
    """Keep the log rows of iterations <= upto (rows after the checkpoint will be recomputed)."""
    if not log_path.exists():
        return
    keep = [ln for ln in log_path.read_text().splitlines() if ln.strip() and json.loads(ln)["iter"] <= upto]
    log_path.write_text("".join(ln + "\n" for ln in keep))


def _check_validation(cfg: TrainConfig, validation: Validation | None, fingerprint: str) -> None:
    if cfg.val is not None and validation is None:
        raise UsageError("--val: the validation store is scored by `pipeline train` (hairdiff.cli.train), which "
                         "builds the scorer; library callers pass train(..., validation=Validation(...))")
    if validation is not None and validation.fingerprint != fingerprint:
        raise StoreMismatchError(f"--val {validation.url} has feature fingerprint {validation.fingerprint[:16]}, the "
                                 f"training stores {fingerprint[:16]}: extract it with the same settings")


def _validate(head: torch.nn.Module, validation: Validation) -> dict:
    head.eval()
    try:
        return {k: float(v) for k, v in validation.score(head).items()}
    finally:
        head.train()


def _setting_diff(key: str, old, now) -> str:
    if key == "head_config" and isinstance(old, dict) and isinstance(now, dict):  # name the fields, not two dicts
        return ", ".join(f"head {k}: checkpoint {old.get(k)!r} vs now {now.get(k)!r}"
                         for k in sorted(set(old) | set(now)) if old.get(k) != now.get(k))
    return f"{key}: checkpoint {old!r} vs now {now!r}"


def _same_setting(key: str, old, now) -> bool:
    if key == "val" and old and now:  # one validation store however its path is spelled (./val.zarr, /abs/val.zarr)
        return same_location(old, now)
    return old == now


def _check_resume(state: dict, config: dict, fingerprint: str, ckpt: Path) -> None:
    old = dict(state["config"])
    if "head_config" in old:  # a config from before a HeadConfig field existed means that field's LEGACY value
        old["head_config"] = head_config_to_dict(head_config_from_dict(old["head_config"]))
    diff = [k for k in RESUME_KEYS if not _same_setting(k, old.get(k), config.get(k))]
    if diff:
        detail = "; ".join(_setting_diff(k, old.get(k), config.get(k)) for k in diff)
        raise RunDirError(f"--resume: {ckpt} was made with other settings ({detail}); resume with the same "
                          f"options, or pass --overwrite to start a new run")
    if state["meta"]["fingerprint"] != fingerprint:
        raise RunDirError(f"--resume: {ckpt} was trained on features with fingerprint "
                          f"{state['meta']['fingerprint']}, the given stores have {fingerprint}")


def _check_loss_rule(state: dict, ckpt: Path) -> None:
    """A checkpoint trained with another loss normalisation cannot continue on its own curve: refused."""
    rule = state["config"].get("loss", "per-image (hairdiff before Mask2Former's normalisation)")
    if rule != LOSS_RULE:
        raise RunDirError(f"--resume: {ckpt} was trained with the loss normalised {rule}, this version normalises "
                          f"it as Mask2Former ({LOSS_RULE}): pass --overwrite to train the run again, or finish it "
                          f"with the hairdiff version that began it")


def _recorded_stores(out: Path) -> tuple[list[dict], Path] | None:
    """The training stores a run folder records (run.json of a finished run, else its latest checkpoint) and
    the file that records them; None for a run that has neither yet."""
    if os.path.lexists(out / "run.json"):
        return read_run_json(out).get("meta", {}).get("stores", []), out / "run.json"
    ckpt = latest_checkpoint(out)
    if ckpt is None:
        return None
    return read_checkpoint_state(ckpt).get("meta", {}).get("stores", []), ckpt / "state.json"


def _same_store(old: dict, new: dict) -> bool:
    """One store: the same data (data key) and sample list and features; stores that predate data keys are
    also compared by location. A store moved or copied (`cache push`) keeps its identity."""
    keys = ("dataset", "split", "fingerprint", "ids_digest")
    if any(old.get(k) != new.get(k) for k in keys):
        return False
    if old.get("data_key") and new.get("data_key"):
        return old["data_key"] == new["data_key"]
    return bool(old.get("url")) and same_location(old["url"], new["url"])


def _check_same_stores(out: Path, stores: list[dict]) -> None:
    """--resume continues a run only on the stores (in their order: it sets the sample order) it began with."""
    found = _recorded_stores(out)
    if found is None:
        return
    old, record = found
    if len(old) != len(stores) or not all(_same_store(o, n) for o, n in zip(old, stores)):
        was = ", ".join(f"{o.get('url')} ({o.get('dataset')}/{o.get('split')})" for o in old)
        now = ", ".join(f"{n['url']} ({n['dataset']}/{n['split']})" for n in stores)
        raise RunDirError(f"--resume: {out} was trained on {was} ({record}), but --cache gives {now}: resume with "
                          f"the --cache it began with, or pass --overwrite or another --out to train on these")


def _finished(out: Path, cfg: TrainConfig, config: dict, fingerprint: str) -> dict | None:
    """With --resume, the record of a run that finished already; None when it has not. Its results stand for this
    run only when they were made with its settings (iters included) and its head is there: a record of other
    settings, or one that names none, is refused, never returned as this run's."""
    if not (cfg.resume and os.path.lexists(out / "run.json")):
        return None
    record = out / "run.json"
    done = read_run_json(out)  # checked: a damaged run.json is one line naming it
    if not (isinstance(done.get("config"), dict) and isinstance(done.get("meta"), dict)
            and "fingerprint" in done["meta"]):
        raise RunFileError(f"{record} records no settings (config and meta with the features' fingerprint), so it "
                           f"cannot be told whether it is this run: pass --overwrite to train it again, or another "
                           f"--out")
    _check_resume(done, config, fingerprint, record)
    check_weights(out / "head.safetensors", FIX_FINAL)
    return done if done.get("iterations") == cfg.iters else None


# ---------------------------------------------------------------------------------------------- train
def train(cfg: TrainConfig, *, device: str = "cpu", dist: DistContext | None = None,
          progress: ProgressFactory = silent, validation: Validation | None = None) -> dict:
    """Train a Mask2Former head on cached features; returns the run summary (also in RUN/run.json).

    `device` is this process's resolved device (under DDP, its own GPU). cfg.stop_at: leave after that many
    iterations with a checkpoint, as a pre-empted job would; cfg.resume later continues on exactly the same curve.
    `validation`: the scorer of cfg.val (built by the command line, which may import evaluate).
    """
    dist = dist or DistContext()
    out = Path(cfg.out)
    data = CachedFeatures.from_urls(cfg.cache, cfg.seed)
    crop_step = check_crop(cfg.crop, data.levels, data.resolution) if cfg.crop else None
    _check_validation(cfg, validation, data.fingerprint)
    # --out outside every store, --val none of the training images: before the run folder is made.
    check_distinct(outputs={"--out": out}, training=data.stores,
                   held_out={"--val": FeatureStore.open(validation.url)} if validation is not None else None)
    hcfg = cfg.head_config(device)
    # The run's record of its settings (checkpoints and config.json; --resume compares RESUME_KEYS of it).
    config = {"iters": cfg.iters, "batch_size": cfg.batch_size, "lr": cfg.lr, "weight_decay": cfg.weight_decay,
              "seed": cfg.seed, "grad_clip": cfg.grad_clip, "head_config": head_config_to_dict(hcfg),
              "ckpt_every": cfg.ckpt_every, "device": str(device), "world_size": dist.world_size,
              "stores": list(cfg.cache), "crop": cfg.crop, "val": cfg.val, "val_every": cfg.val_every,
              "log_every": cfg.log_every, "compile": cfg.compile, "channels_last": cfg.channels_last,
              "loss": LOSS_RULE}
    meta = {"fingerprint": data.fingerprint, "fingerprint_inputs": data.fingerprint_inputs,
            "levels": [dataclasses.asdict(lv) for lv in data.levels],
            "stores": [{k: d[k] for k in ("dataset", "split", "ids_digest", "fingerprint", "url", "data_key", "root")}
                       for d in data.describe()],
            "head_config": config["head_config"]}
    # One training at a time in a folder: the lock is taken before the folder is looked at.
    with hold_run_dir(out) if dist.is_main else nullcontext():
        return _train_in(cfg, data, out, hcfg, config, meta, device=device, dist=dist, progress=progress,
                         crop_step=crop_step, validation=validation)


def _train_in(cfg: TrainConfig, data, out, hcfg, config, meta, *, device, dist, progress, crop_step, validation):
    """The run folder prepared (or checked for --resume), then the run, unless it finished already."""
    if dist.is_main:
        _prepare_run_dir(out, cfg.resume, cfg.overwrite)
        if cfg.resume:  # the run folder is bound to its stores and settings: checked before any result is used
            _check_same_stores(out, meta["stores"])
    dist.barrier()
    done = _finished(out, cfg, config, data.fingerprint)
    if done is not None:
        return done  # finished already, with these settings: nothing to do
    if dist.is_main:  # which images this head sees, by content: what `pipeline eval` calls training data
        record_trained_images(out, [images(s) for s in data.stores])

    is_cuda = torch.device(device).type == "cuda"
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    if not is_cuda:
        torch.use_deterministic_algorithms(True)
    try:
        return _run(cfg, data, out, hcfg, config, meta, device=device, dist=dist, progress=progress,
                    crop_step=crop_step, validation=validation)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)


def _run(cfg: TrainConfig, data, out, hcfg, config, meta, *, device, dist, progress, crop_step, validation) -> dict:
    """Build the head and its optimizer (from the last checkpoint with --resume), then the loop."""
    torch.manual_seed(cfg.seed)
    head = Mask2FormerHead(data.levels, hcfg).to(device)
    criterion = build_batch_criterion(hcfg).to(device)
    optimizer = build_optimizer(head, cfg.lr, cfg.weight_decay)
    start, pos, resumed_from = 0, Position(), None
    ckpt = latest_checkpoint(out) if cfg.resume else None
    if ckpt is not None:
        # Cheap, clear refusals first: a checkpoint of another format or other settings is never loaded.
        recorded = read_checkpoint_state(ckpt)
        check_optimizer_format(recorded, optimizer, ckpt)
        _check_resume(recorded, config, data.fingerprint, ckpt)
        _check_loss_rule(recorded, ckpt)
        state = load_checkpoint(ckpt, head, optimizer, device=device)
        start, pos, resumed_from = state["iteration"], Position.from_dict(state["data_position"]), str(ckpt)
    log_path = out / "log.jsonl"
    if dist.is_main:
        _truncate_log(log_path, start) if cfg.resume else log_path.unlink(missing_ok=True)
        if ckpt is None and (out / BEST_DIR).exists():  # a start from iteration 0 is a new run, rebuilt whole: a
            shutil.rmtree(out / BEST_DIR)  # best/ of a start no checkpoint records never stands for it
        atomic_write_json(out / "config.json", {"config": config, "meta": meta}, durable=True, sort_keys=True)
    model = head
    if dist.active:
        model = torch.nn.parallel.DistributedDataParallel(
            head, device_ids=[torch.device(device).index] if torch.device(device).type == "cuda" else None)
    step = TrainStep(model, head, criterion, optimizer, device=device, grad_clip=cfg.grad_clip,
                     global_batch=cfg.batch_size, seed=cfg.seed, compile=cfg.compile, channels_last=cfg.channels_last,
                     mean=dist.mean if dist.active else None)
    loop = _Loop(cfg, data, out, head, optimizer, step, meta, config, dist=dist, device=device, crop_step=crop_step,
                 validation=validation, last_ckpt=ckpt)
    stream = BatchStream(data, cfg.batch_size, cfg.seed, pos, dist.rank, dist.world_size, cfg.workers, cfg.prefetch)
    try:
        loop.run(stream, start, progress)
    finally:
        stream.close()
        loop.close()
    return loop.finish(start, resumed_from)


class _Loop:
    """The iterations of one run: a step each, the step's statistics read from the device once per
    --log-every (and before every checkpoint and validation), log rows, RUN/best/ and checkpoints."""

    def __init__(self, cfg, data, out, head, optimizer, step, meta, config, *, dist, device, crop_step, validation,
                 last_ckpt):
        self.cfg, self.data, self.out, self.head, self.optimizer, self.step = cfg, data, out, head, optimizer, step
        self.meta, self.config, self.dist, self.device = meta, config, dist, device
        self.crop_step, self.validation, self.last_ckpt = crop_step, validation, last_ckpt
        self.stats = StepLog(step.names, cfg.log_every, device)
        self.log_path = out / "log.jsonl"
        self.log_file = open(self.log_path, "a") if dist.is_main else None
        self.best = read_best(out) if last_ckpt is not None else None  # a resumed run keeps the best it had
        self.last, self.images, self.t_val = {}, 0, 0.0
        self.end = cfg.iters if cfg.stop_at is None else None
        self.host_rows, self.t_read, self.t_run = [], time.perf_counter(), time.perf_counter()

    def run(self, stream: BatchStream, start: int, progress: ProgressFactory) -> None:
        cfg, head = self.cfg, self.head
        self.end = cfg.iters if cfg.stop_at is None else max(start, min(cfg.stop_at, cfg.iters))
        head.train()
        with (progress if self.dist.is_main else silent)("train", cfg.iters, start) as advance:
            for it in range(start, self.end):
                t0 = time.perf_counter()
                batch, pos = next(stream)
                waited = time.perf_counter() - t0  # > 0 when the readers fell behind the model
                if self.crop_step:
                    batch = crop_batch(batch, self.data.levels, cfg.crop, self.crop_step, cfg.seed, it)
                check_label_values(batch["labels"], head.cfg.num_classes, "training labels")  # on the host
                lr_now = set_lr(self.optimizer, cfg.lr, it, cfg.iters)
                self.stats.record(self.step(batch, it))
                self.images += cfg.batch_size
                self.host_rows.append({"iter": it + 1, "epoch": pos.epoch, "lr": lr_now, "data_wait_s": waited,
                                       "time": time.time()})
                self._after(it + 1, pos, advance)

    def _after(self, done: int, pos: Position, advance) -> None:
        """After iteration `done`: at a log read, validation or checkpoint, read the device's statistics and
        do them (a divergence stops the run here, before anything could save its weights)."""
        cfg, dist = self.cfg, self.dist
        validate = self.validation is not None and (done % cfg.val_every == 0 or done == cfg.iters)
        checkpoint = done % cfg.ckpt_every == 0 or done == self.end
        if not (validate or checkpoint or done % cfg.log_every == 0):
            return
        rows = self._read()  # the only wait for the device
        if validate and dist.is_main:
            rows[-1].update({f"val_{k}": v for k, v in self._validate(done).items()})
        self._write(rows)
        if dist.is_main:
            self.last = rows[-1]
            advance(len(rows), f"loss {self.last['loss']:.4f}  {self.last['images_per_s']:.1f} img/s")
        if checkpoint:
            if dist.is_main:
                self.last_ckpt = save_checkpoint(self.out, iteration=done, model=self.head, optimizer=self.optimizer,
                                                 position=pos.to_dict(), config=self.config, meta=self.meta)
            dist.barrier()
        self.t_read = time.perf_counter()  # validation and checkpoints are not training time

    def _read(self) -> list[dict]:
        """The log rows of the iterations since the last read; TrainingDiverged at the first bad one."""
        # The head's weights are checked in the same copy: a step can leave them non-finite while its loss and
        # gradient norm (computed before the update) were finite, and nothing may save such weights.
        device_rows, nonfinite = self.stats.read(self.dist, also=nonfinite_count(self.head))
        now = time.perf_counter()
        ips = len(device_rows) * self.cfg.batch_size / max(now - self.t_read, 1e-9)
        rows = [{"iter": h["iter"], "epoch": h["epoch"], "loss": d["loss"],
                 **{k: d[k] for k in self.step.names[1:-1]}, "lr": h["lr"], "grad_norm": d["grad_norm"],
                 "images_per_s": ips, "data_wait_s": h["data_wait_s"], "time": h["time"]}
                for h, d in zip(self.host_rows, device_rows)]
        self.host_rows, self.t_read = [], now
        bad = first_divergence(device_rows)
        if bad is not None:
            self._write(rows[:bad[0]])
            row = rows[bad[0]]
            values = {k: row[k] for k in ("loss", "grad_norm") if not math.isfinite(row[k])}
            raise TrainingDiverged(
                f"non-finite {bad[1]} at iteration {row['iter']} ({values}); {self._kept()}. Check the features "
                f"(`pipeline cache verify STORE`) or lower --lr, then {self._again()}.")
        if nonfinite:
            self._write(rows)  # their losses were finite: the log keeps them
            raise TrainingDiverged(
                f"the head's weights became non-finite by iteration {rows[-1]['iter']} ({int(nonfinite):,} of "
                f"{value_count(self.head):,} values; its loss and gradient norm were finite before the update); "
                f"{self._kept()}. Lower --lr (or --weight-decay), then {self._again()}.")
        return rows

    def _kept(self) -> str:
        return (f"kept the last good checkpoint {self.last_ckpt}" if self.last_ckpt else
                "no checkpoint was written before it")

    def _again(self) -> str:
        return "--resume" if self.last_ckpt else "run again with --overwrite"

    def _validate(self, done: int) -> dict:
        """Score the head on --val; a better score than the best so far becomes RUN/best/."""
        t0 = time.perf_counter()
        scored = _validate(self.head, self.validation)
        self.t_val += time.perf_counter() - t0
        if math.isfinite(scored[METRIC]) and (self.best is None or scored[METRIC] > self.best["score"]):
            self.best = save_best(self.out, self.head, iteration=done, metrics=scored, meta=self.meta)
        return scored

    def _write(self, rows: list[dict]) -> None:
        if self.dist.is_main and rows:
            self.log_file.write("".join(json.dumps(r) + "\n" for r in rows))
            self.log_file.flush()

    def close(self) -> None:
        if self.log_file:
            self.log_file.close()

    def finish(self, start: int, resumed_from: str | None) -> dict:
        """The run's summary; for a finished run also curves.png, RUN/head.safetensors and RUN/run.json."""
        cfg, dist, best = self.cfg, self.dist, self.best
        seconds = time.perf_counter() - self.t_run - self.t_val  # training only: validation is reported apart
        finished = self.end == cfg.iters
        summary = {"run_dir": str(self.out), "iterations": self.end, "total_iterations": cfg.iters,
                   "finished": finished, "started_at_iteration": start, "resumed_from": resumed_from,
                   "final_loss": self.last.get("loss"), "final_lr": self.last.get("lr"),
                   "images_per_s": self.images / seconds if seconds > 0 else None, "seconds": seconds,
                   "validation_seconds": self.t_val, "num_samples": len(self.data), "batch_size": cfg.batch_size,
                   "world_size": dist.world_size, "device": str(self.device),
                   "head_parameters": sum(p.numel() for p in self.head.parameters()),
                   "checkpoint": str(self.last_ckpt) if self.last_ckpt else None,
                   "best": {k: best[k] for k in ("iteration", "metric", "score")} if best else None,
                   # The same settings give other weights on another torch or thread count (float sums in
                   # another order: on the tiny model 2 mIoU points after 60 iterations), so a run says which
                   # (the finishing process's; a resumed run's earlier part may have had others).
                   "environment": {"versions": versions(("torch", "numpy")), "threads": torch.get_num_threads()}}
        if dist.is_main and finished:
            from hairdiff.train.curves import plot_curves  # matplotlib: only for a finished run

            plot_curves(self.log_path, self.out / "curves.png")
            write_final(self.out, self.head, {**summary, "config": self.config,
                                              "meta": {**self.meta, "iteration": cfg.iters}})
        dist.barrier()
        return summary
