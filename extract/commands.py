"""The `pipeline extract` command: options, progress, and the store URL as the last line of stdout."""
from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cache import default_cache_root
from extract.runner import BadInputStop, ExtractConfig, ExtractStats, run_local, write_report

err = Console(stderr=True, soft_wrap=True)  # never break paths across lines


def _report_path(cache_root: str, dataset: str, split: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    # Reports are local files even when the store is remote: they are for the person who ran the command.
    local = next((r for r in (cache_root, default_cache_root()) if "://" not in r), str(Path.home() / ".cache/hairdiff"))
    base = Path(local) / "reports"
    return base / f"extract-{dataset}-{split}-{stamp}.json"


def extract_command(
    dataset: Annotated[str, typer.Option(help="figaro | celebamask | facesynthetics | folder")],
    root: Annotated[Path, typer.Option(help="dataset root in its published layout")],
    split: Annotated[str, typer.Option(help="figaro: Training/Testing; celebamask: train/val/test/all; "
                                            "facesynthetics: train/val/test/all; folder: all")] = "all",
    model: Annotated[str, typer.Option(help="hub id, local diffusers folder, .safetensors/.ckpt file, or 'tiny'")]
    = "CompVis/stable-diffusion-v1-3",
    revision: Annotated[Optional[str], typer.Option(help="hub revision (branch, tag or commit)")] = None,
    prompt: Annotated[str, typer.Option(help="text conditioning of the UNet")] = "A photo of a hair.",
    timestep: Annotated[int, typer.Option(help="diffusion timestep the latent is noised to")] = 0,
    resolution: Annotated[int, typer.Option(help="images are letterboxed to RESOLUTION x RESOLUTION")] = 512,
    taps: Annotated[str, typer.Option(help="'unet' (decoder levels), 'odise', or comma-separated module names")]
    = "unet",
    dtype: Annotated[str, typer.Option(help="auto (fp16 on CUDA, fp32 on CPU) | float16 | bfloat16 | float32")]
    = "auto",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    batch_size: Annotated[int, typer.Option(help="images per forward pass (halved automatically on OOM)")] = 8,
    workers: Annotated[int, typer.Option(help="decoding/resizing worker processes")] = 2,
    limit: Annotated[Optional[int], typer.Option(help="only the first N samples in id order")] = None,
    ids: Annotated[Optional[Path], typer.Option(help="file of sample ids (one per line) to extract")] = None,
    cache_root: Annotated[Optional[str], typer.Option(help="where stores live (path or s3://, gs://, file:// URL);"
                                                           " default $HAIRDIFF_CACHE or ~/.cache/hairdiff")] = None,
    precision: Annotated[str, typer.Option(help="stored precision: fp16 (lossless) | int8 (per-channel)")] = "fp16",
    shard_size: Annotated[int, typer.Option(help="samples per shard file")] = 16,
    seed: Annotated[int, typer.Option(help="seed of the one fixed noise tensor")] = 0,
    on_error: Annotated[str, typer.Option(help="stop: stop at the first bad file; skip: report and go on")] = "stop",
    scheduler: Annotated[Optional[str], typer.Option(help="Dask: local:N (N worker processes) or "
                                                          "tcp://HOST:PORT")] = None,
    report: Annotated[Optional[Path], typer.Option(help="JSON report path (default under the cache root)")] = None,
) -> None:
    """Extract frozen Stable Diffusion features of a dataset into a shared Zarr feature store.

    Prints progress on stderr and the store's path or URL as the last line of stdout. Running the same
    command again reuses the store and computes only the missing samples.
    """
    if on_error not in ("stop", "skip"):
        raise typer.BadParameter("--on-error must be 'stop' or 'skip'")
    cfg = ExtractConfig(
        dataset=dataset, root=str(root), split=split, cache_root=cache_root or default_cache_root(), model=model,
        revision=revision, prompt=prompt, timestep=timestep, resolution=resolution, taps=taps, dtype=dtype,
        device=device, batch_size=batch_size, workers=workers, limit=limit, ids_file=str(ids) if ids else None,
        seed=seed, precision=precision, shard_size=shard_size, on_error=on_error,
    )
    report_path = report or _report_path(cfg.cache_root, dataset, split)
    stats = ExtractStats()
    try:
        if scheduler:
            from extract.distributed import run_distributed

            run_distributed(cfg, scheduler, stats, progress_factory=_progress)
        else:
            run_local(cfg, stats, progress_factory=_progress, log=err.print)
    except BadInputStop as e:
        err.print(f"[red]error:[/red] {e}\nEverything already written is kept; fix or remove the file, or pass "
                  "--on-error skip, and run the same command again.", highlight=False)
        raise typer.Exit(1)
    except OSError as e:
        if e.errno is None or stats.store == "":
            raise
        err.print(f"[red]error:[/red] {e.strerror or e}", highlight=False)  # disk full, quota, file size limit
        raise typer.Exit(1)
    finally:
        if stats.store:
            try:
                write_report(report_path, cfg, stats)
            except OSError as e:  # a full disk must not hide the real error behind this one
                err.print(f"warning: could not write the report {report_path}: {e}")
    _summary(stats, report_path)
    print(stats.store)


class _progress:
    """A rich progress bar on stderr with images/s and ETA; called with the number of images done."""

    def __init__(self, total: int, label: str):
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]} img/s"), TimeRemainingColumn(), console=err,
                            disable=not err.is_terminal and total == 0)
        self.task = self.bar.add_task(label, total=total, rate="-")

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __call__(self, n: int) -> None:
        self.bar.advance(self.task, n)
        t = self.bar.tasks[0]
        if t.elapsed:
            self.bar.update(self.task, rate=f"{t.completed / t.elapsed:.2f}")

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)


def _summary(stats: ExtractStats, report_path: Path) -> None:
    err.print(f"computed {stats.computed}, reused {stats.reused}, skipped {len(stats.skipped)}"
              + (f", {stats.claimed_elsewhere} claimed by another process" if stats.claimed_elsewhere else "")
              + f" in {stats.seconds:.1f} s ({stats.images_per_s:.2f} img/s)")
    if stats.skipped:
        err.print(f"skipped files are listed in {report_path}")
    err.print(f"report: {report_path}")
    sys.stdout.flush()
