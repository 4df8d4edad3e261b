"""metrics.json (machine-readable) and metrics.md (our row beside the paper's), written atomically."""
from __future__ import annotations

import json
import math
from pathlib import Path

from hairdiff.core.files import atomic_write
from hairdiff.evaluate.metrics import PAPER_KEYS as KEYS
from hairdiff.evaluate.overlay import key_text
from hairdiff.evaluate.paper import one_reading_bound, paper_rows

POOLED, PER_IMAGE = "pooled", "per-image mean"
RANDOM_WEIGHTS = "random-weight test model: these numbers say nothing about the method"


def to_json(obj) -> str:
    """Strict JSON: NaN (an undefined metric, see evaluate.metrics) becomes null."""
    def clean(o):
        if isinstance(o, float) and math.isnan(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    return json.dumps(clean(obj), indent=1, default=str, allow_nan=False)


def fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def interval_text(interval) -> str:
    """'[53.10, 56.21]', or '' when there is no interval."""
    return f"[{interval[0]:.2f}, {interval[1]:.2f}]" if interval else ""


def with_interval(value, interval) -> str:
    """'54.67 [53.10, 56.21]': a metric with its 95% interval (just the value when there is none)."""
    return fmt(value) + (f" {interval_text(interval)}" if interval else "")


def interval_of(metrics: dict, reading: str, key: str):
    """The [lo, hi] of metric `key` in `reading` ("pooled" | "per_image_mean"), or None (older metrics.json)."""
    return ((metrics.get("intervals") or {}).get(reading) or {}).get(key)


def intervals_note(metrics: dict) -> str:
    """What the brackets are: the bootstrap's level, images and resamples ('' without intervals)."""
    iv = metrics.get("intervals")
    if not iv:
        return ""
    return (f"Brackets: the {iv['level']:.0%} interval of a bootstrap over the {iv['images']} test images "
            f"({iv['resamples']:,} resamples, seed {iv['seed']}; evaluate/bootstrap.py): differences inside it are "
            "not established on these images; `pipeline compare` gives the paired interval of a difference.")


def coverage_text(metrics: dict) -> str:
    """'4 of 748 images (744 not extracted yet)', or 'all 748 images' when the scores cover the whole split."""
    n = metrics.get("images")
    total = metrics.get("images_total", n)
    if n is None or total is None:
        return "? images"
    if n == total:
        return f"all {total} image" + ("s" if total != 1 else "")
    return f"{n} of {total} images ({total - n} not extracted yet)"


def partial(metrics: dict) -> bool:
    return metrics.get("images_total") is not None and metrics.get("images") != metrics.get("images_total")


def write_report(out_dir: Path, metrics: dict, dataset: str, extra: dict) -> None:
    """DIR/metrics.json (metrics + provenance in `extra`) and DIR/metrics.md (our row beside the paper's)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / "metrics.json", to_json({**metrics, **extra}))
    lines = [f"# Evaluation on {dataset} ({extra.get('split', '')}, {coverage_text(metrics)})", ""]
    if partial(metrics):
        lines += [f"**Partial: {coverage_text(metrics)} of the store's split.** These scores cover "
                  f"{metrics['coverage']:.1%} of it, and the paper's rows below cover whole test splits: run the "
                  "`pipeline extract` command that made the store again to finish it, then score again.", ""]
    if extra.get("evaluated_on_training_store"):
        seen = extra.get("training_store") or {}
        held = "is one the head was trained on" if extra.get("training_images") in (None, metrics.get("images_total")) \
            else f"shares {extra['training_images']} of its {metrics.get('images_total')} images with one the head " \
                 "was trained on"
        lines += [f"**Warning: evaluated on training data.** This store {held} "
                  f"({seen.get('dataset')}/{seen.get('split')}, {seen.get('url')}): the scores measure fit, not "
                  f"how the head does on images it has not seen.", ""]
    if extra.get("cross_dataset"):
        lines += [f"Cross-dataset: the head was trained on {', '.join(extra.get('trained_on', []))}, not on "
                  f"{dataset} (the paper's open question: how a model trained on one dataset transfers).", ""]
    backbone = extra.get("backbone", "") + (f" ({RANDOM_WEIGHTS})" if extra.get("random_weight_backbone") else "")
    lines += comparison_table(metrics, dataset, backbone)
    pooled = {k: with_interval(metrics.get(k), interval_of(metrics, "pooled", k))
              for k in ("hair_iou", "hair_f1", "boundary_f", "mean_class_accuracy")}
    lines += ["", f"Hair IoU {pooled['hair_iou']}, hair F1 {pooled['hair_f1']}, boundary F {pooled['boundary_f']} "
              f"(tolerance 0.75% of the diagonal), mean class accuracy {pooled['mean_class_accuracy']} (pooled).", "",
              "Accuracy is pixel accuracy (the paper's equation 8 read without its 1/p_cls factor); precision counts "
              "a class that occurs but is never predicted as 0; see README.", "",
              f"Overlays (overlays/): {key_text()}; the key is drawn under each picture."]
    atomic_write(out_dir / "metrics.md", "\n".join(lines) + "\n")


def comparison_table(metrics: dict, dataset: str, backbone: str) -> list[str]:
    """Our two readings beside the paper's rows, with the note on rows that cannot be one reading."""
    per_image = metrics.get("per_image_mean") or {}
    covered = coverage_text(metrics) if "images" in metrics else ""  # beside the paper's rows: how much was scored
    lines = ["| method | backbone | reading | mIoU | accuracy | precision | F1 | note |",
             "|---|---|---|---|---|---|---|---|",
             f"| **hairdiff (this run)** | {backbone} | {POOLED} | "
             + " | ".join(with_interval(metrics.get(k), interval_of(metrics, "pooled", k)) for k in KEYS)
             + f" | {covered} |"]
    if per_image:
        lines.append(f"| **hairdiff (this run)** | {backbone} | {PER_IMAGE} | "
                     + " | ".join(with_interval(per_image.get(k), interval_of(metrics, "per_image_mean", k))
                                  for k in KEYS) + f" | {covered} |")
    rows = paper_rows(dataset)
    for r in rows:
        lines.append(f"| {r['method']} (paper) | {r['backbone']} | \"mean values\" | "
                     + " | ".join(fmt(r[k]) for k in KEYS) + f" | {one_reading_bound(r)} |")
    lines += ["", f"Readings: **{POOLED}** = one confusion matrix summed over the split's pixels (each pixel "
              f"weighs the same; what `train --val` selects on); **{PER_IMAGE}** = each image scored on its own, "
              "then the mean over images (each image weighs the same)."]
    if intervals_note(metrics):
        lines += ["", intervals_note(metrics)]
    if rows:
        lines += ["", "The paper reports \"mean values\" without saying over what. For each class IoU = F1/(2 - F1) "
                  "is convex, so within any one reading mean IoU >= F1/(2 - F1) of the mean F1; a paper row "
                  "noted above breaks that bound, so its columns do not all come from one reading: compare "
                  "column by column, mIoU first (README, \"Which numbers to compare\")."]
    return lines
