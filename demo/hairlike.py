"""Procedural hair-like portraits in the `folder` layout, for the demo and tests (no download needed).

Each image: a textured background, a skin-toned head, a hair mass and many thin curved strands, some
crossing the face and the background so that fine edges matter. Hair colours sometimes overlap the
background's, so colour alone does not solve it. The mask is exactly the hair pixels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def _strand(draw, rng, cx, cy, r, colour, width):
    a = rng.uniform(0, 2 * np.pi)
    x, y = cx + r * np.cos(a) * rng.uniform(0.6, 1.1), cy + r * np.sin(a) * rng.uniform(0.6, 1.1)
    pts = [(x, y)]
    heading = rng.uniform(0, 2 * np.pi)
    for _ in range(int(rng.integers(6, 14))):
        heading += rng.normal(0, 0.35)
        x, y = x + 4 * np.cos(heading), y + 4 * np.sin(heading) + 1.5
        pts.append((x, y))
    draw.line(pts, fill=colour, width=width)
    return pts


def make_image(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    s = size / 128
    bg = rng.uniform(40, 220, 3)
    noise = rng.normal(0, 18, (size // 8, size // 8, 3))
    tex = np.asarray(Image.fromarray(np.clip(bg + noise, 0, 255).astype(np.uint8)).resize((size, size), Image.BICUBIC))
    img = Image.fromarray(tex)
    mask = Image.new("L", (size, size), 0)
    d, m = ImageDraw.Draw(img), ImageDraw.Draw(mask)
    hair = rng.uniform(10, 120, 3) if rng.random() < 0.7 else bg + rng.normal(0, 25, 3)
    hair_c = tuple(int(v) for v in np.clip(hair, 0, 255))
    cx, cy = size * rng.uniform(0.4, 0.6), size * rng.uniform(0.45, 0.6)
    r = size * rng.uniform(0.18, 0.26)
    # hair mass behind and above the head
    box = [cx - 1.35 * r, cy - 1.5 * r, cx + 1.35 * r, cy + rng.uniform(0.6, 1.6) * r]
    d.ellipse(box, fill=hair_c)
    m.ellipse(box, fill=255)
    # Strand texture inside the mass (lighter and darker locks), so the mass is not one flat colour.
    lock = Image.new("RGB", (size, size), hair_c)
    ld = ImageDraw.Draw(lock)
    for _ in range(int(rng.integers(30, 70))):
        shade = tuple(int(v) for v in np.clip(np.array(hair_c) + rng.normal(0, 22), 0, 255))
        _strand(ld, rng, cx, cy - 0.3 * r, rng.uniform(0.2, 1.3) * r, shade, max(1, int(round(s))))
    inside = Image.new("L", (size, size), 0)
    ImageDraw.Draw(inside).ellipse(box, fill=255)
    img.paste(lock, (0, 0), inside)
    skin = tuple(int(v) for v in rng.uniform([150, 100, 80], [240, 200, 170]))
    face = [cx - 0.85 * r, cy - 0.8 * r, cx + 0.85 * r, cy + 1.1 * r]
    d.ellipse(face, fill=skin)
    m.ellipse(face, fill=0)
    fringe = [cx - 0.9 * r, cy - 1.1 * r, cx + 0.9 * r, cy - 0.35 * r]
    d.chord(fringe, 180, 360, fill=hair_c)
    m.chord(fringe, 180, 360, fill=255)
    for _ in range(int(rng.integers(25, 60))):  # thin strands: the fine structure
        w = max(1, int(round(s * rng.choice([1, 1, 2]))))
        shade = tuple(int(v) for v in np.clip(np.array(hair_c) + rng.normal(0, 15, 3), 0, 255))
        pts = _strand(d, rng, cx, cy, 1.3 * r, shade, w)
        m.line(pts, fill=255, width=w)
    img = img.filter(ImageFilter.GaussianBlur(0.4 * s))
    return np.asarray(img), (np.asarray(mask) > 127).astype(np.uint8) * 255


def make_hairlike_dataset(out_dir, n: int = 48, size: int = 128, seed: int = 0) -> Path:
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img, mask = make_image(size, rng)
        Image.fromarray(img).save(out / "images" / f"hair{i:04d}.png")
        Image.fromarray(mask).save(out / "masks" / f"hair{i:04d}.png")
    return out
