"""Builders of small datasets in the published layouts, for any test: `from tests.fixtures_layouts import ...`.

Each writes real image files (JPEG/PNG/PBM through PIL) with a known hair region and returns the root to
pass as --root. Hair is always the top `hair_rows` fraction of the annotation, so expected labels are easy
to compute: see `expected_label`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

HAIR_ROWS = 0.25  # the top quarter of every built annotation is hair


def expected_label(h: int, w: int, hair_rows: float = HAIR_ROWS) -> np.ndarray:
    label = np.zeros((h, w), np.uint8)
    label[: int(round(h * hair_rows))] = 1
    return label


def _photo(h: int, w: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def make_figaro(root, split: str = "Testing", frames=(1, 2, 3), size=(30, 40)) -> Path:
    """Original/<split>/FrameNNNNN-org.jpg + GT/<split>/FrameNNNNN-gt.pbm (1-bit, hair white). size = (h, w)."""
    root = Path(root)
    (root / "Original" / split).mkdir(parents=True, exist_ok=True)
    (root / "GT" / split).mkdir(parents=True, exist_ok=True)
    h, w = size
    for f in frames:
        _photo(h, w, f).save(root / "Original" / split / f"Frame{f:05d}-org.jpg", quality=90)
        Image.fromarray(expected_label(h, w).astype(bool)).convert("1").save(root / "GT" / split / f"Frame{f:05d}-gt.pbm")
    return root


def make_celebamask(root, ids=(0, 1, 2, 3, 2001), no_hair=(1,), image_size: int = 64, mask_size: int = 32,
                    partition: dict | None = None, partition_at: str = "root") -> Path:
    """CelebA-HQ-img/<id>.jpg + CelebAMask-HQ-mask-anno/<id//2000>/<id:05d>_{hair,skin}.png (0/255, 3-channel).

    Ids in `no_hair` get no _hair.png (only _skin.png). `partition` maps id -> 0/1/2 (train/val/test) and
    writes CelebA-HQ-to-CelebA-mapping.txt plus list_eval_partition.txt (at the root, or in its parent
    with partition_at="parent"); None writes neither. HQ id i maps to CelebA file (7 * i + 3):06d.jpg.
    """
    root = Path(root)
    (root / "CelebA-HQ-img").mkdir(parents=True, exist_ok=True)
    for i in ids:
        _photo(image_size, image_size, i).save(root / "CelebA-HQ-img" / f"{i}.jpg", quality=90)
        anno = root / "CelebAMask-HQ-mask-anno" / str(i // 2000)
        anno.mkdir(parents=True, exist_ok=True)
        hair = np.repeat(expected_label(mask_size, mask_size)[..., None] * 255, 3, axis=2)
        skin = np.zeros((mask_size, mask_size, 3), np.uint8)
        skin[mask_size // 2:, mask_size // 4: 3 * mask_size // 4] = 255
        Image.fromarray(skin).save(anno / f"{i:05d}_skin.png")
        if i not in no_hair:
            Image.fromarray(hair).save(anno / f"{i:05d}_hair.png")
    if partition is not None:
        lines = ["idx orig_idx orig_file"] + [f"{i} {7 * i + 2} {7 * i + 3:06d}.jpg" for i in ids]
        (root / "CelebA-HQ-to-CelebA-mapping.txt").write_text("\n".join(lines) + "\n")
        where = root if partition_at == "root" else root.parent
        # CelebA's file lists every CelebA image, most of them not in HQ: add a few unrelated rows.
        rows = [f"{7 * i + 3:06d}.jpg {partition[i]}" for i in ids if i in partition] + ["000001.jpg 0", "000002.jpg 2"]
        (where / "list_eval_partition.txt").write_text("\n".join(rows) + "\n")
    return root


def make_facesynthetics(root, ids=range(10), size: int = 24) -> Path:
    """NNNNNN.png + NNNNNN_seg.png: rows 0..size/4 hair (13), a 255 ignore block, skin (1) and background (0)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for i in ids:
        _photo(size, size, i).save(root / f"{i:06d}.png")
        seg = np.zeros((size, size), np.uint8)
        seg[: size // 4] = 13
        seg[size // 2:, : size // 2] = 1
        seg[-3:, -3:] = 255
        seg[size // 2, -1] = 15  # clothing: another class, must read as background
        Image.fromarray(seg, "L").save(root / f"{i:06d}_seg.png")
    return root


def make_folder(root, stems=("a", "b", "c"), split: str | None = None, size=(32, 48), ext: str = ".png",
                mask_values=(0, 255)) -> Path:
    """[<split>/]images/<stem><ext> + masks/<stem>.png with background mask_values[0], hair mask_values[1]."""
    root = Path(root)
    base = root / split if split else root
    (base / "images").mkdir(parents=True, exist_ok=True)
    (base / "masks").mkdir(parents=True, exist_ok=True)
    h, w = size
    for k, stem in enumerate(stems):
        _photo(h, w, k).save(base / "images" / f"{stem}{ext}")
        lab = expected_label(h, w)
        mask = np.where(lab == 1, mask_values[1], mask_values[0]).astype(np.uint8)
        Image.fromarray(mask, "L").save(base / "masks" / f"{stem}.png")
    return root
