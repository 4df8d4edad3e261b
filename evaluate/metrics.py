"""Confusion-matrix metrics of the paper (equations 7-10), two classes: 0 background, 1 hair.

Notation of the paper: p_ij = pixels of true class i predicted as class j, t_i = sum_j p_ij (pixels of
class i), p_cls = number of classes. Equations 7-10 as printed do not give the quantities their names
promise (read literally, eq 8 caps accuracy at 50% and eq 10 caps F1 at 50%, while the paper reports
about 98%), so we read them as the standard definitions they clearly intend:
  mIoU      (7)  = 1/p_cls sum_i p_ii / (t_i + sum_j p_ji - p_ii)     (true + predicted - overlap)
  accuracy  (8)  = sum_i p_ii / sum_i t_i                              (pixel accuracy, no 1/p_cls)
  precision (9)  = 1/p_cls sum_i p_ii / sum_j p_ji                     (over pixels predicted as i)
  F1        (10) = 1/p_cls sum_i 2 p_ii / (2 p_ii + sum_{j!=i} p_ij + sum_{j!=i} p_ji)   (2TP/(2TP+FN+FP))
The sums in 7 and 9 run over the predicted-as-i column (the printed row sum would turn them into other
quantities: eq 9 would be recall); the sums in 10 leave out the diagonal. We also report the mean class
accuracy (1/p_cls sum_i p_ii / t_i, the other reading of eq 8) and per-class IoU, precision, recall, F1.

Empty classes (the convention of torchmetrics' macro averages with zero_division=0): a class that occurs
in the truth or in the prediction counts in every class mean, and a ratio of it whose denominator is 0
counts as 0. So the precision of a class that is never predicted is 0 (eq 9 averages over all p_cls
classes: a head that predicts no hair gets half its accuracy as precision, not its accuracy), and so is
the recall of a class that is predicted but absent from the truth. A class absent from both truth and
prediction is left out of the means (its per-class values are NaN): nothing about it was right or wrong.
Ignore pixels (255) are excluded before counting.

Two readings of a split, both reported (evaluate/run.py, metrics.json / metrics.md):
  pooled          one confusion matrix summed over every image of the split, then the equations: each pixel
                  weighs the same (what detectron2's SemSegEvaluator, used by Mask2Former, reports). The
                  top-level keys of metrics.json (mIoU, accuracy, precision, f1, ...) and what `train --val`
                  selects the best head on.
  per-image mean  each image scored on its own matrix, then the mean over images: each image weighs the same
                  (metrics.json `per_image_mean`; an image where a metric is undefined is left out of its mean).
The paper says "mean values" without saying over what. Its rows cannot come from either reading alone: for
one class IoU = F1 / (2 - F1), a convex function, so in any one reading the mean IoU is at least
f(mean F1) (`miou_floor`; per image, then again over images); Figaro "Ours" reports mIoU 95.40 with F1 98.28,
which implies mIoU >= 96.62.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hairdiff.core.labels import CLASS_NAMES, IGNORE


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int = 2, ignore: int = IGNORE) -> np.ndarray:
    """(K, K) int64, rows = ground truth, columns = prediction."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    keep = gt != ignore
    g = gt[keep].astype(np.int64)
    p = pred[keep].astype(np.int64)
    # An out-of-range value would silently land in another cell of the flattened bincount.
    for name, a in (("ground truth", g), ("prediction", p)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} holds class {int(a.max()) if a.max() >= num_classes else int(a.min())}; "
                             f"expected 0..{num_classes - 1} (or {ignore} = ignore in the ground truth)")
    return np.bincount(g * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _div(a: np.ndarray, b: np.ndarray, present: np.ndarray) -> np.ndarray:
    """a / b per class; 0 where b is 0 for a class that occurs, NaN for a class absent from truth and prediction."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.where(present, 0.0, np.nan))


def _nanmean(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """The mean over `axis` of the values that are not NaN; NaN where there are none (no warning)."""
    ok = ~np.isnan(a)
    n = ok.sum(axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, np.where(ok, a, 0.0).sum(axis) / np.maximum(n, 1), np.nan)


def metric_arrays(conf) -> dict[str, np.ndarray]:
    """The equations (module docstring) on a stack of confusion matrices (..., K, K) -> {name: (...) array} in
    percent: the one place they are computed. `scores` is its form for one matrix; the bootstrap
    (evaluate/bootstrap.py) runs it on thousands of resampled sums at once."""
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    t = conf.sum(-1)  # true pixels per class
    p = conf.sum(-2)  # predicted pixels per class
    present = (t + p) > 0  # the class occurs in the truth or in the prediction
    iou = _div(tp, t + p - tp, present)
    precision = _div(tp, p, present)
    recall = _div(tp, t, present)
    f1 = _div(2 * tp, t + p, present)
    total = conf.sum((-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        accuracy = np.where(total > 0, tp.sum(-1) / np.where(total > 0, total, 1), np.nan)
    out = {"mIoU": 100 * _nanmean(iou), "accuracy": 100 * accuracy, "precision": 100 * _nanmean(precision),
           "f1": 100 * _nanmean(f1), "mean_class_accuracy": 100 * _nanmean(recall)}
    for k, name in enumerate(CLASS_NAMES[: tp.shape[-1]]):
        out.update({f"{name}_iou": 100 * iou[..., k], f"{name}_precision": 100 * precision[..., k],
                    f"{name}_recall": 100 * recall[..., k], f"{name}_f1": 100 * f1[..., k]})
    return out


def scores(conf: np.ndarray) -> dict:
    """Metrics in percent from a (summed) confusion matrix; see the module docstring for the equations."""
    conf = np.asarray(conf, dtype=np.float64)
    values = {k: float(v) for k, v in metric_arrays(conf).items()}
    t, p = conf.sum(1), conf.sum(0)
    out = {**{k: values[k] for k in ("mIoU", "accuracy", "precision", "f1", "mean_class_accuracy")},
           "pixels": int(conf.sum())}
    for k, name in enumerate(CLASS_NAMES[: conf.shape[0]]):
        out.update({f"{name}_{m}": values[f"{name}_{m}"] for m in ("iou", "precision", "recall", "f1")})
        out[f"{name}_pixels"] = int(t[k])
        out[f"{name}_predicted_pixels"] = int(p[k])
    return out


@dataclass(frozen=True)
class Metric:
    """A reported metric: key (metrics.json's name), label (tables' header), hub (its `metric_type` in a model
    card's model-index: the Hugging Face `evaluate` library's id, or ours for the rest), paper (one of eq. 7-10),
    per_image (also averaged over images, the per-image reading), summary (in one-line summaries: the demo)."""

    key: str
    label: str
    hub: str
    paper: bool = False
    per_image: bool = True
    summary: bool = True


# Every metric the commands report, in the order tables and reports show them: the one owner of that list.
METRICS = (
    Metric("mIoU", "mIoU", "mean_iou", paper=True),
    Metric("accuracy", "accuracy", "accuracy", paper=True),
    Metric("precision", "precision", "precision", paper=True),
    Metric("f1", "F1", "f1", paper=True),
    Metric("hair_iou", "hair IoU", "hair_iou"),
    Metric("hair_f1", "hair F1", "hair_f1", summary=False),
    Metric("boundary_f", "boundary F", "boundary_f1", per_image=False),
)
TABLE_KEYS = tuple(m.key for m in METRICS)
PAPER_KEYS = tuple(m.key for m in METRICS if m.paper)
PER_IMAGE_KEYS = tuple(m.key for m in METRICS if m.per_image)  # averaged over images (the per-image reading)
SUMMARY_KEYS = tuple(m.key for m in METRICS if m.summary)


def per_image_means(rows: list[dict]) -> dict:
    """Mean over images of each image's own metrics (rows: one dict per image holding PER_IMAGE_KEYS); an
    image whose metric is undefined (NaN/None) is left out of that metric's mean. `images`: how many rows."""
    out: dict = {"images": len(rows)}
    for k in PER_IMAGE_KEYS:
        v = np.array([r.get(k) for r in rows], dtype=np.float64)
        out[k] = float(_nanmean(v)) if v.size else float("nan")
    return out


def miou_floor(f1_percent: float) -> float:
    """The least mean IoU a mean F1 allows within one reading (percent): for each class IoU = F1 / (2 - F1),
    convex in F1, so mean IoU >= f(mean F1) (Jensen)."""
    f = f1_percent / 100
    return 100 * f / (2 - f)
