"""Boundary F-score of the hair class (Csurka et al. 2013): how well the fine edges agree.

A boundary pixel of the prediction counts as correct when a true boundary pixel lies within `tol` pixels,
and vice versa; precision and recall over boundary pixels, accumulated over a split, give F. The default
tolerance is 0.75% of the image diagonal (at least 1 pixel), as in the original BF score. Pixels in the
ignore region are not boundary pixels.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask that touch a non-mask pixel (4-neighbourhood)."""
    m = mask.astype(bool)
    return m & ~ndimage.binary_erosion(m, structure=ndimage.generate_binary_structure(2, 1),
                                       border_value=1)


def default_tolerance(shape) -> float:
    return max(1.0, 0.0075 * float(np.hypot(*shape[:2])))


def boundary_counts(pred: np.ndarray, gt: np.ndarray, tol: float | None = None, ignore: int = 255) -> np.ndarray:
    """[matched predicted boundary px, predicted boundary px, matched true boundary px, true boundary px]."""
    tol = default_tolerance(gt.shape) if tol is None else tol
    valid = gt != ignore
    bp = boundary(pred == 1) & valid
    bg = boundary(gt == 1) & valid
    if bg.any():
        dist_to_g = ndimage.distance_transform_edt(~bg)
        mp = int((dist_to_g[bp] <= tol).sum())
    else:
        mp = 0
    if bp.any():
        dist_to_p = ndimage.distance_transform_edt(~bp)
        mg = int((dist_to_p[bg] <= tol).sum())
    else:
        mg = 0
    return np.array([mp, int(bp.sum()), mg, int(bg.sum())], dtype=np.int64)


def boundary_f(counts: np.ndarray) -> float:
    mp, np_, mg, ng = (float(x) for x in counts)
    if np_ == 0 and ng == 0:
        return float("nan")
    precision = mp / np_ if np_ else 0.0
    recall = mg / ng if ng else 0.0
    return 100 * (2 * precision * recall / (precision + recall)) if precision + recall > 0 else 0.0
