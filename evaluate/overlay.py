"""Overlay PNGs: where the prediction and the annotation agree and where they do not."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from hairdiff.core.labels import IGNORE

TP, FP, FN = (0, 200, 0), (230, 30, 30), (40, 90, 255)


def overlay(image: np.ndarray | None, pred: np.ndarray, gt: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Green: hair found; red: hair predicted where there is none; blue: hair missed."""
    h, w = gt.shape
    base = np.full((h, w, 3), 128, np.uint8) if image is None else np.asarray(
        Image.fromarray(image).resize((w, h), Image.BILINEAR))
    out = base.astype(np.float32)
    valid = gt != IGNORE
    for colour, sel in ((TP, (pred == 1) & (gt == 1)), (FP, (pred == 1) & (gt == 0)), (FN, (pred == 0) & (gt == 1))):
        sel = sel & valid
        out[sel] = (1 - alpha) * out[sel] + alpha * np.array(colour, np.float32)
    return out.clip(0, 255).astype(np.uint8)


def save_overlay(path: Path, image, pred, gt) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(overlay(image, pred, gt)).save(path)


def mask_overlay(image: np.ndarray, pred: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    out = image.astype(np.float32)
    sel = pred == 1
    out[sel] = (1 - alpha) * out[sel] + alpha * np.array(TP, np.float32)
    return out.clip(0, 255).astype(np.uint8)
