"""Boundary F-score of the hair class (Csurka et al. 2013, "BF score"): how well the fine edges agree.

A boundary pixel is a hair pixel with a 4-neighbour that is non-hair (and not ignore). A predicted
boundary pixel is matched when a true boundary pixel lies within `tol` pixels (Euclidean), and vice
versa; boundary precision and recall come from those counts, accumulated over a split, and F is their
harmonic mean, in percent. Default tolerance: 0.75% of the image diagonal, at least 1 pixel, as in the
original BF score. Pixels in the ignore region (255 in the ground truth) are never boundary pixels, and
an edge against the ignore region is not a boundary (we do not know what lies there).
A split with no boundary at all, in truth or prediction, has F = NaN.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from hairdiff.core.labels import IGNORE

_CROSS = ndimage.generate_binary_structure(2, 1)


def boundary(mask: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Pixels of `mask` with a 4-neighbour inside the image that is outside `mask` and inside `valid`."""
    m = mask.astype(bool)
    v = np.ones_like(m) if valid is None else valid.astype(bool)
    return m & v & ndimage.binary_dilation(~m & v, structure=_CROSS)


def default_tolerance(shape) -> float:
    return max(1.0, 0.0075 * float(np.hypot(*shape[:2])))


def boundary_counts(pred: np.ndarray, gt: np.ndarray, tol: float | None = None, ignore: int = IGNORE) -> np.ndarray:
    """int64 [matched predicted boundary px, predicted boundary px, matched true boundary px, true boundary px].

    Add these over images and pass the sum to `boundary_f`.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    tol = default_tolerance(gt.shape) if tol is None else float(tol)
    valid = gt != ignore
    bp = boundary(pred == 1, valid)
    bg = boundary(gt == 1, valid)

    def matched(src: np.ndarray, dst: np.ndarray) -> int:
        if not src.any() or not dst.any():
            return 0
        # distance from every pixel to the nearest boundary pixel of the other map
        return int((ndimage.distance_transform_edt(~dst)[src] <= tol).sum())

    return np.array([matched(bp, bg), int(bp.sum()), matched(bg, bp), int(bg.sum())], dtype=np.int64)


def boundary_f(counts) -> float:
    """F in percent from (summed) `boundary_counts`; NaN when neither map has a boundary."""
    return float(boundary_f_array(np.asarray(counts, dtype=np.float64)))


def boundary_f_array(counts: np.ndarray) -> np.ndarray:
    """boundary_f of a stack of summed counts (..., 4) -> (...): the one place F is computed (the bootstrap
    runs it on thousands of resampled sums at once)."""
    mp, n_pred, mg, n_true = np.moveaxis(np.asarray(counts, dtype=np.float64), -1, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(n_pred > 0, mp / np.where(n_pred > 0, n_pred, 1), 0.0)
        recall = np.where(n_true > 0, mg / np.where(n_true > 0, n_true, 1), 0.0)
        f = np.where(precision + recall > 0, 2 * precision * recall / np.where(precision + recall > 0,
                                                                                 precision + recall, 1), 0.0)
    return np.where((n_pred == 0) & (n_true == 0), np.nan, 100 * f)
