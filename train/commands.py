"""The `pipeline train` command: options, DDP launch, a summary, and the run folder as the last line."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer


def _parse_head_settings(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise typer.BadParameter(f"--head {item!r}: use NAME=VALUE, e.g. --head num_queries=50")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise typer.BadParameter(f"--device {device}: no CUDA device is visible; use --device cpu")
    return device


def _relaunch_args(**opts) -> list[str]:
    """The same command line for each torchrun process (everything but --nproc)."""
    args: list[str] = []
    for c in opts.pop("cache"):
        args += ["--cache", c]
    for h in opts.pop("head"):
        args += ["--head", h]
    for k, v in opts.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            args.append(flag if v else "--no-" + k.replace("_", "-"))
        elif v is not None:
            args += [flag, str(v)]
    return args


def train_command(
    cache: Annotated[list[str], typer.Option("--cache", help="feature store path or URL (repeatable; all must "
                                                             "share one fingerprint)")],
    out: Annotated[Path, typer.Option(help="run folder: log.jsonl, checkpoints/, head.safetensors, run.json")],
    iters: Annotated[int, typer.Option(help="optimizer steps")] = 20000,
    batch_size: Annotated[int, typer.Option(help="global batch size (split across --nproc processes)")] = 16,
    lr: Annotated[float, typer.Option(help="AdamW base learning rate (poly decay, power 0.9)")] = 1e-4,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay")] = 0.05,
    grad_clip: Annotated[float, typer.Option(help="clip the full model's gradient norm to this (0: off)")] = 0.01,
    seed: Annotated[int, typer.Option(help="seed of initialisation, sample order and point sampling")] = 0,
    device: Annotated[str, typer.Option(help="auto (cuda if available) | cpu | cuda | cuda:N")] = "auto",
    ckpt_every: Annotated[int, typer.Option(help="write a checkpoint every N iterations")] = 1000,
    resume: Annotated[bool, typer.Option(help="continue the run in --out from its last checkpoint")] = False,
    overwrite: Annotated[bool, typer.Option(help="start again in an --out that already holds a run")] = False,
    nproc: Annotated[int, typer.Option(help="data-parallel processes (DDP via torchrun; gloo on CPU, nccl on "
                                            "CUDA)")] = 1,
    small: Annotated[Optional[bool], typer.Option(help="a small head (hidden 64, 16 queries, 3 decoder layers, 2 "
                                                       "encoder layers, 1024 points); default: on for CPU, off "
                                                       "(the paper's Mask2Former) on CUDA")] = None,
    head: Annotated[Optional[list[str]], typer.Option(help="override a HeadConfig field, NAME=VALUE "
                                                           "(repeatable), e.g. --head num_queries=50")] = None,
    workers: Annotated[int, typer.Option(help="threads reading batches from the stores")] = 2,
    prefetch: Annotated[int, typer.Option(help="batches read ahead of the model")] = 4,
    stop_at: Annotated[Optional[int], typer.Option(help="stop after this iteration with a checkpoint (for "
                                                        "time-limited slots); continue later with --resume")] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar on stderr")] = True,
) -> None:
    """Train a Mask2Former head on cached Stable Diffusion features.

    Writes RUN/log.jsonl (every loss term, lr, grad norm, images/s per iteration), atomic checkpoints,
    RUN/curves.png, and finally RUN/head.safetensors + RUN/run.json. Prints a summary and the run folder
    as the last line of stdout.
    """
    from train.distributed import init_distributed, launch, shutdown_distributed, under_launcher

    head = head or []
    if nproc > 1 and not under_launcher():
        code = launch(nproc, _relaunch_args(
            cache=list(cache), head=list(head), out=out, iters=iters, batch_size=batch_size, lr=lr,
            weight_decay=weight_decay, grad_clip=grad_clip, seed=seed, device=device, ckpt_every=ckpt_every,
            resume=resume, overwrite=overwrite, small=small, workers=workers, prefetch=prefetch,
            stop_at=stop_at, progress=progress))
        raise typer.Exit(code)  # rank 0 printed the summary and the run folder

    from cache.errors import CacheError
    from train.checkpoint import CheckpointError
    from train.data import EmptyDataError, StoreMismatchError
    from train.loop import RunDirError, TrainingDiverged, train

    ctx, dev = init_distributed(_resolve_device(device))
    if small is None:
        # The paper-size head runs at ~0.2 img/s on 2 CPU cores; the small one keeps CPU runs usable.
        small = str(dev).startswith("cpu")
        if small:
            print("CPU: training the small head (pass --no-small for the paper's Mask2Former size)", file=sys.stderr)
    try:
        summary = train(list(cache), out, iters=iters, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                        seed=seed, device=dev, ckpt_every=ckpt_every, resume=resume, overwrite=overwrite,
                        head_config=_parse_head_settings(head), small=small, grad_clip=grad_clip,
                        workers=workers, prefetch=prefetch, progress=progress, stop_at=stop_at, dist=ctx)
    except TrainingDiverged as e:
        print(f"error: training diverged: {e}", file=sys.stderr)
        raise typer.Exit(3)
    except (RunDirError, StoreMismatchError, EmptyDataError, CheckpointError, CacheError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise typer.Exit(2)
    finally:
        shutdown_distributed(ctx)
    if ctx.is_main:
        _print_summary(summary)
        print(out)


def _print_summary(s: dict) -> None:
    state = "finished" if s.get("finished", True) else "stopped (continue with --resume)"
    loss = s.get("final_loss")
    ips = s.get("images_per_s")
    print(f"{state}: {s.get('iterations')}/{s.get('total_iterations', s.get('iterations'))} iterations, "
          f"final loss {loss:.4f}" if loss is not None else f"{state}: no iteration run", end="")
    if ips:
        print(f", {ips:.1f} images/s, {s.get('seconds', 0):.0f} s on {s.get('device')} "
              f"x{s.get('world_size', 1)}", end="")
    print()
