"""Overlay PNGs: where the prediction and the annotation agree and where they do not, with the colour key
drawn under the picture (an overlay is often looked at far from the README that explains it)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hairdiff.core.labels import IGNORE

TP, FP, FN, IGNORED = (0, 200, 0), (230, 30, 30), (40, 90, 255), (190, 190, 190)
NO_IMAGE = (64, 64, 64)  # the base when the dataset's image is unreachable: dark, so grey stays "ignore"
# (colour name, RGB, meaning): the key drawn into eval overlays and listed in metrics.md
EVAL_KEY = (("green", TP, "hair found"), ("red", FP, "hair predicted where there is none"),
            ("blue", FN, "hair missed"), ("grey", IGNORED, "ignore (not scored)"))
PREDICT_KEY = (("green", TP, "predicted hair"),)


def key_text(key=EVAL_KEY) -> str:
    """The key in words: 'green = hair found, red = ...'."""
    return ", ".join(f"{name} = {meaning}" for name, _, meaning in key)


def tint(out: np.ndarray, sel: np.ndarray, colour, alpha: float) -> None:
    out[sel] = (1 - alpha) * out[sel] + alpha * np.array(colour, np.float32)


def overlay(image: np.ndarray | None, pred: np.ndarray, gt: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The picture alone (no key), at the annotation's size: colours as in EVAL_KEY."""
    h, w = gt.shape
    base = np.full((h, w, 3), NO_IMAGE, np.uint8) if image is None else np.asarray(
        Image.fromarray(image).resize((w, h), Image.BILINEAR))
    out = base.astype(np.float32)
    valid = gt != IGNORE
    for colour, sel in ((TP, (pred == 1) & (gt == 1)), (FP, (pred == 1) & (gt == 0)), (FN, (pred == 0) & (gt == 1))):
        tint(out, sel & valid, colour, alpha)
    tint(out, ~valid, IGNORED, alpha)
    return out.clip(0, 255).astype(np.uint8)


def label_font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def with_key(picture: np.ndarray, key=EVAL_KEY) -> np.ndarray:
    """`picture` with a white strip under it holding a swatch and the meaning of each colour, wrapped into
    rows; the canvas widens when the picture is narrower than one entry, the picture stays top-left."""
    h, w = picture.shape[:2]
    size = int(np.clip(w // 40, 12, 28))
    font, pad = label_font(size), max(2, size // 3)
    entries = [(colour, meaning, size + pad + int(np.ceil(font.getlength(meaning)))) for _, colour, meaning in key]
    width = max(w, max(e[2] for e in entries) + 2 * pad)
    rows, row, used = [], [], pad
    for e in entries:
        if row and used + e[2] + pad > width:
            rows.append(row)
            row, used = [], pad
        row.append(e)
        used += e[2] + 2 * pad
    rows.append(row)
    line = size + pad
    canvas = Image.new("RGB", (width, h + pad + len(rows) * line), (255, 255, 255))
    canvas.paste(Image.fromarray(picture), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for r, entries_in_row in enumerate(rows):
        x, y = pad, h + pad + r * line
        for colour, meaning, span in entries_in_row:
            draw.rectangle([x, y, x + size - 1, y + size - 1], fill=tuple(colour))
            top, bottom = font.getbbox(meaning)[1::2]
            draw.text((x + size + pad, y + (size - (bottom - top)) / 2 - top), meaning, fill=(0, 0, 0), font=font)
            x += span + 2 * pad
    return np.asarray(canvas)


def save_overlay(path: Path, image, pred, gt) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(with_key(overlay(image, pred, gt))).save(path)


def mask_overlay(image: np.ndarray, pred: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """`pipeline predict`'s overlay: predicted hair tinted green, its key under the picture."""
    out = image.astype(np.float32)
    tint(out, pred == 1, TP, alpha)
    return with_key(out.clip(0, 255).astype(np.uint8), PREDICT_KEY)
