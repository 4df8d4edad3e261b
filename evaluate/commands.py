"""`pipeline eval` and `pipeline predict`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

err = Console(stderr=True, soft_wrap=True)  # never break paths across lines


def _fail(e: Exception) -> typer.Exit:
    """Errors the user can fix (a wrong run folder, a mismatched backbone): one line, no traceback."""
    err.print(f"[red]error:[/red] {e}", highlight=False)
    return typer.Exit(2)


def _device(device: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def eval_command(
    run: Annotated[Path, typer.Option(help="run folder of `pipeline train`")],
    cache: Annotated[str, typer.Option(help="feature store to score (path or URL)")],
    out: Annotated[Path, typer.Option(help="folder for metrics.json, metrics.md, per_image.json, overlays/")],
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    batch_size: Annotated[int, typer.Option(help="samples per forward pass")] = 8,
    overlays: Annotated[int, typer.Option(help="overlays of the best and of the worst images")] = 4,
) -> None:
    """Score a trained head on an extracted feature store.

    Predictions are mapped back to each annotation's own resolution (undoing the letterbox) and compared
    with the exact original masks: mIoU, accuracy, precision, F1 (the paper's equations 7-10), hair IoU/F1,
    boundary F. Writes metrics.json, metrics.md (beside the paper's table), per_image.json and overlays of
    the best and worst images. Example:

        pipeline eval --run runs/figaro --cache ~/.cache/hairdiff/figaro/test/0123abcd.zarr --out eval/figaro
    """
    from evaluate.run import evaluate_run
    from train.checkpoint import CheckpointError

    try:
        m = evaluate_run(run, cache, out, device=_device(device), batch_size=batch_size, num_overlays=overlays)
    except CheckpointError as e:
        raise _fail(e) from None
    t = Table(title=f"{m['dataset']} / {m['split']}: {m['images']} images"
              + (" (cross-dataset)" if m["cross_dataset"] else ""))
    keys = ("mIoU", "accuracy", "precision", "f1", "hair_iou", "hair_f1", "boundary_f")
    for k in keys:
        t.add_column(k)
    t.add_row(*[f"{m[k]:.2f}" for k in keys])
    err.print(t)
    print(out / "metrics.json")


def predict_command(
    images: Annotated[list[Path], typer.Argument(help="image files")],
    run: Annotated[Path, typer.Option(help="run folder of `pipeline train`")],
    out: Annotated[Path, typer.Option(help="folder for <stem>_mask.png, <stem>_overlay.png, predictions.json")],
    model: Annotated[str, typer.Option(help="backbone to load when the run's model is not reachable by its "
                                            "recorded name (a local folder)")] = "",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
) -> None:
    """Segment hair in new image files with a trained run.

    Computes features on the fly with the backbone, taps, prompt, timestep, resolution and seed recorded in
    the run (refusing if they would differ), then writes <stem>_mask.png (0/255, the image's own size),
    <stem>_overlay.png and predictions.json. Example:

        pipeline predict photo1.jpg photo2.png --run runs/figaro --out predictions/
    """
    from evaluate.predict import RunMismatchError, predict_images
    from train.checkpoint import CheckpointError

    try:
        rows = predict_images(run, images, out, device=_device(device), model=model or None)
    except (CheckpointError, RunMismatchError) as e:
        raise _fail(e) from None
    for r in rows:
        err.print(f"{r['image']}: hair {r['hair_fraction'] * 100:.1f}% -> {r['mask']}")
    print(out / "predictions.json")
