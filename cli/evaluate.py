"""`pipeline eval` and `pipeline predict`: a table on stderr, the JSON path as the last line of stdout."""
from __future__ import annotations

import sys
from pathlib import Path

from rich.table import Table

from hairdiff.cli.progress import err, rich_progress
from hairdiff.evaluate.config import EvalConfig, PredictConfig
from hairdiff.evaluate.metrics import TABLE_KEYS


def evaluate(cfg: EvalConfig) -> None:
    """Score a trained head on an extracted feature store.

    Predictions are mapped back to each annotation's own resolution (undoing the letterbox) and compared
    with the exact original masks: mIoU, accuracy, precision, F1 (the paper's equations 7-10), hair IoU/F1,
    boundary F. Writes metrics.json, metrics.md (beside the paper's table), per_image.json and overlays of
    the best and worst images. Example:

        pipeline eval --run runs/figaro --cache ~/.cache/hairdiff/figaro/test/0123abcd.zarr --out eval/figaro
    """
    from hairdiff.cache.distinct import check_distinct
    from hairdiff.core.paths import check_output_dir
    from hairdiff.evaluate.report import (
        RANDOM_WEIGHTS,
        coverage_text,
        interval_of,
        intervals_note,
        partial,
        with_interval,
    )
    from hairdiff.evaluate.run import evaluate_run

    check_output_dir(cfg.out, "--out")
    check_distinct(outputs={"--out": cfg.out})
    m = evaluate_run(cfg, progress=rich_progress, warn=lambda message: print(f"warning: {message}", file=sys.stderr))
    if m["head"]["source"] == "best":
        err.print(f"scored the best validated head: {m['head']['weights']} (iteration {m['head']['iteration']}, "
                  f"val {m['head']['metric']} {m['head']['score']:.2f}); --no-best scores the final head")
    t = Table(title=f"{m['dataset']} / {m['split']}: {coverage_text(m)}"
              + (" (cross-dataset)" if m["cross_dataset"] else "")
              + (" (training data)" if m["evaluated_on_training_store"] else "")
              + (f" ({RANDOM_WEIGHTS})" if m["random_weight_backbone"] else ""))
    t.add_column("reading")
    for k in TABLE_KEYS:
        t.add_column(k)
    t.add_row("pooled", *[with_interval(m[k], interval_of(m, "pooled", k)) for k in TABLE_KEYS])
    per_image = m.get("per_image_mean") or {}  # evaluate/metrics.py: the two readings
    t.add_row("per-image mean", *[with_interval(per_image[k], interval_of(m, "per_image_mean", k))
                                  if per_image.get(k) is not None else "-" for k in TABLE_KEYS])
    err.print(t)
    if intervals_note(m):
        err.print(intervals_note(m), markup=False, highlight=False)
    if partial(m):  # said where the result goes too, not only in the table: these are not the split's scores
        print(f"partial: scored {coverage_text(m)} of {m['dataset']}/{m['split']} ({m['coverage']:.1%}); run the "
              f"extraction of {m['store']} to the end for the split's scores")
    print(Path(cfg.out) / "metrics.json")


def predict(cfg: PredictConfig) -> None:
    """Segment hair in new image files (or the image files of folders) with a trained run.

    Uses the head `pipeline eval` scores (RUN/best/ when the run validated, unless --no-best) and says which,
    on stderr and in predictions.json. Computes features on the fly with the backbone, taps, prompt,
    timestep, resolution and seed recorded in the run (refusing if they would differ), then writes
    <stem>_mask.png (0/255, the image's own size), <stem>_overlay.png (predicted hair in green, the key under
    it) and predictions.json. Every path is checked before the model loads. Example:

        pipeline predict photo1.jpg photos/ --run runs/figaro --out predictions/ --batch-size 4
    """
    from hairdiff.cache.distinct import check_distinct
    from hairdiff.core.paths import check_output_dir
    from hairdiff.evaluate.predict import predict_images

    check_output_dir(cfg.out, "--out")
    check_distinct(outputs={"--out": cfg.out}, inputs={"IMAGES": [i for i in cfg.images if Path(i).is_dir()]})
    rows = predict_images(cfg, warn=lambda message: print(message, file=sys.stderr),
                          say=lambda message: err.print(f"predicting with {message}"))
    for r in rows:
        if "mask" in r:
            err.print(f"{r['image']}: hair {r['hair_fraction'] * 100:.1f}% -> {r['mask']}")
    skipped = sum("error" in r for r in rows)
    if skipped:
        print(f"skipped {skipped} of {len(rows)} image(s); each is listed with its reason in "
              f"{Path(cfg.out) / 'predictions.json'}", file=sys.stderr)
    print(Path(cfg.out) / "predictions.json")
