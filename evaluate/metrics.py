"""Confusion-matrix metrics of the paper (equations 7-10), two classes: 0 background, 1 hair.

With p_ij the pixels of true class i predicted as j and t_i = sum_j p_ij:
  mIoU      (7)  = mean_i p_ii / (t_i + sum_j p_ji - p_ii)
  accuracy  (8)  = sum_i p_ii / sum_i t_i   (pixel accuracy)
  precision (9)  = mean_i p_ii / sum_j p_ji
  F1        (10) = mean_i 2 p_ii / (2 p_ii + sum_j p_ij + sum_j p_ji - 2 p_ii)... i.e. 2TP / (2TP + FP + FN)
Equation 8 is printed with a 1/p_cls factor in front of pixel accuracy, which would cap accuracy at 50%
while the paper reports 98%: we read it as plain pixel accuracy and also report the mean class accuracy.
Precision and F1 as printed carry the same ambiguity in their denominators; we use the standard
per-class definitions (precision over predicted pixels, F1 = 2TP / (2TP + FP + FN)) averaged over classes.
A class absent from both truth and prediction over the whole split has undefined ratios: NaN, excluded
from the means. Ignore pixels (255) are excluded before counting.
"""
from __future__ import annotations

import numpy as np

IGNORE = 255


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int = 2, ignore: int = IGNORE) -> np.ndarray:
    """(K, K) int64, rows = ground truth, columns = prediction."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    keep = gt != ignore
    g = gt[keep].astype(np.int64)
    p = pred[keep].astype(np.int64)
    return np.bincount(g * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def scores(conf: np.ndarray) -> dict:
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diag(conf)
    t = conf.sum(1)  # true pixels per class
    p = conf.sum(0)  # predicted pixels per class
    iou = _div(tp, t + p - tp)
    precision = _div(tp, p)
    recall = _div(tp, t)
    f1 = _div(2 * tp, t + p)
    total = conf.sum()
    out = {
        "mIoU": 100 * float(np.nanmean(iou)),
        "accuracy": 100 * float(tp.sum() / total) if total else float("nan"),
        "precision": 100 * float(np.nanmean(precision)),
        "f1": 100 * float(np.nanmean(f1)),
        "mean_class_accuracy": 100 * float(np.nanmean(recall)),
        "pixels": int(total),
    }
    for k, name in enumerate(["background", "hair"][: len(tp)]):
        out[f"{name}_iou"] = 100 * float(iou[k])
        out[f"{name}_precision"] = 100 * float(precision[k])
        out[f"{name}_recall"] = 100 * float(recall[k])
        out[f"{name}_f1"] = 100 * float(f1[k])
    return out
