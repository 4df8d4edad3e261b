"""`pipeline train`: the DDP relaunch, a summary, and the run folder as the last line of stdout.

With --nproc K this module is also what torchrun starts in each of the K processes: they read the
TrainConfig from the environment, so the relaunch never lists options again.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from hairdiff.cli.progress import err, rich_progress
from hairdiff.core.fields import to_dict
from hairdiff.core.progress import silent
from hairdiff.train.config import TrainConfig

CONFIG_ENV = "HAIRDIFF_TRAIN_CONFIG"


def train(cfg: TrainConfig, progress: bool = True) -> None:
    """Train a Mask2Former head on cached Stable Diffusion features.

    Writes RUN/log.jsonl (every loss term, lr, grad norm, images/s per iteration), atomic checkpoints,
    RUN/curves.png, and finally RUN/head.safetensors + RUN/run.json. Prints a summary and the run folder
    as the last line of stdout.
    """
    from hairdiff.core.paths import check_output_dir
    from hairdiff.train.distributed import launch, under_launcher

    check_output_dir(cfg.out, "--out")
    if cfg.nproc > 1 and not under_launcher():
        payload = json.dumps({"config": to_dict(cfg), "progress": progress})
        launch(cfg.nproc, "hairdiff.cli.train", {CONFIG_ENV: payload})
        return  # rank 0 printed the summary and the run folder
    _train_here(cfg, progress)


def _train_here(cfg: TrainConfig, progress: bool) -> None:
    from hairdiff.core.devices import resolve_device
    from hairdiff.train.distributed import init_distributed, shutdown_distributed
    from hairdiff.train.loop import train as train_loop

    ctx, dev = init_distributed(str(resolve_device(cfg.device)))
    if ctx.is_main:
        _announce(cfg)  # first: it opens (and checks) the stores and the run folder, so a mistake is said alone
    if cfg.small is None and str(dev).startswith("cpu") and ctx.is_main:
        # The paper-size head runs at ~0.2 img/s on 2 CPU cores; the small one keeps CPU runs usable.
        err.print("CPU: training the small head (pass --no-small for the paper's Mask2Former size)")
    try:
        summary = train_loop(cfg, device=dev, dist=ctx, progress=rich_progress if progress else silent,
                             validation=_validation(cfg, dev, say=_say if ctx.is_main else None))
    except KeyboardInterrupt:
        if not ctx.is_main:
            raise
        from hairdiff.core.errors import Interrupted

        raise Interrupted(_what_was_kept(cfg)) from None
    finally:
        shutdown_distributed(ctx)
    if ctx.is_main:
        _print_summary(summary)
        print(cfg.out)


def _validation(cfg: TrainConfig, device, say=None):
    """--val STORE as the loop's scorer, composed here from evaluate's own scoring (train never imports it).
    Every validation row of log.jsonl carries how much of the store's split it scored (val_images,
    val_images_total, val_coverage); say(line): told once which images are scored."""
    if cfg.val is None:
        return None
    from hairdiff.cache import FeatureStore
    from hairdiff.evaluate.config import EvalConfig
    from hairdiff.evaluate.metrics import TABLE_KEYS
    from hairdiff.evaluate.run import score_head
    from hairdiff.train.validation import Validation

    store = FeatureStore.open(cfg.val)
    batch = EvalConfig.__dataclass_fields__["batch_size"].default  # what `pipeline eval` reads per forward pass

    def score(head) -> dict:
        metrics, _ = score_head(head, store, batch_size=batch, device=device)
        return {k: metrics[k] for k in (*TABLE_KEYS, "images", "images_total", "coverage")}

    if say is not None:
        from hairdiff.evaluate.report import coverage_text

        done = int(store.done_mask()[store.layout.originals()].sum())
        total = store.layout.num_images
        say(f"validating on {coverage_text({'images': done, 'images_total': total})} of --val {store.url}"
            + ("" if done == total else ": the validation scores cover only these"))

    return Validation(store.url, store.features_fingerprint, score)


def _print_summary(s: dict) -> None:
    state = "finished" if s.get("finished", True) else "stopped (continue with --resume)"
    loss, ips = s.get("final_loss"), s.get("images_per_s")
    line = (f"{state}: {s.get('iterations')}/{s.get('total_iterations', s.get('iterations'))} iterations, "
            f"final loss {loss:.4f}" if loss is not None else f"{state}: no iteration run")
    if ips:
        line += f", {ips:.1f} images/s, {s.get('seconds', 0):.0f} s on {s.get('device')} x{s.get('world_size', 1)}"
    if s.get("best"):
        b = s["best"]
        line += f"; best val {b['metric']} {b['score']:.2f} at iteration {b['iteration']} (RUN/best)"
    print(line)


def _announce(cfg: TrainConfig) -> None:
    """Before the first batch: what the run trains on, and for --resume where it starts."""
    from hairdiff.model.best import BEST_DIR
    from hairdiff.model.checkpoints import latest_checkpoint, read_checkpoint_state
    from hairdiff.model.trained import read_run_json
    from hairdiff.train.data import open_stores

    stores = open_stores(cfg.cache)
    done = [int(s.done_mask().sum()) for s in stores]
    if sum(done):  # none done: the loop's own error says what to do, alone
        each = [s.url + (f" ({d} of {s.num_samples})" if len(stores) > 1 else "") for s, d in zip(stores, done)]
        _say(f"training on {sum(done)} done samples of {sum(s.num_samples for s in stores)} in {', '.join(each)}")
    if not cfg.resume:
        return
    out = Path(cfg.out)
    if os.path.lexists(out / "run.json") and read_run_json(out).get("iterations") == cfg.iters:
        _say(f"--resume: {out} finished all {cfg.iters} iterations already: nothing to do")
    elif (ckpt := latest_checkpoint(out)) is not None:
        _say(f"resuming from {ckpt} (iteration {read_checkpoint_state(ckpt)['iteration']} of {cfg.iters})")
    else:
        _say(f"--resume: no checkpoint in {out}, nothing to resume: starting at iteration 0"
             + (f" (its {BEST_DIR}/, from a start no checkpoint records, is dropped)" if (out / BEST_DIR).exists()
                else ""))


def _what_was_kept(cfg: TrainConfig) -> str:
    """The one line for Ctrl-C: the checkpoint that survives, and the command that continues from it."""
    from hairdiff.model.checkpoints import latest_checkpoint, read_checkpoint_state

    out = Path(cfg.out)
    try:  # the last iteration logged (rows are flushed one by one)
        at = f" at iteration {json.loads((out / 'log.jsonl').read_text().splitlines()[-1])['iter']}"
    except (OSError, IndexError, ValueError, KeyError):
        at = ""
    ckpt = latest_checkpoint(out)
    if ckpt is None:
        return (f"interrupted{at}, before the first checkpoint (one every --ckpt-every {cfg.ckpt_every} "
                f"iterations): nothing kept; run the same command with --resume to start again at iteration 0")
    return (f"interrupted{at}: kept the checkpoint {ckpt} (iteration {read_checkpoint_state(ckpt)['iteration']} "
            f"of {cfg.iters}); continue with the same command and --resume")


def _say(line: str) -> None:
    print(line, file=sys.stderr)  # not rich: a path may hold [brackets], which rich reads as markup


def _child() -> None:
    """One torchrun process: the config its launcher put in the environment."""
    payload = json.loads(os.environ[CONFIG_ENV])
    _train_here(TrainConfig(**payload["config"]), payload["progress"])


if __name__ == "__main__":
    from hairdiff.cli.guard import run_guarded

    sys.exit(run_guarded(_child))
