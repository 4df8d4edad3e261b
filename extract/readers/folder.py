"""Users' own data: <root>[/<split>]/images/<stem>.<jpg|jpeg|png|bmp|webp> with .../masks/<stem>.png.

Mask values: 0 is background; either {0, 255} or {0, 1} marks hair. Anything else (e.g. JPEG-compressed
or multi-class masks) is an error naming the file: binarise the mask first.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from extract.imageio import check_label_size, load_gray, load_rgb
from extract.readers.base import LoadedSample, SampleRef, non_empty, require_dir, select_ids
from extract.readers.errors import BadSampleError

LAYOUT = "images/<stem>.jpg|png and masks/<stem>.png (optionally under <split>/)"
IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class FolderReader:
    name = "folder"

    def _base(self, root: Path, split: str) -> Path:
        if split not in ("all", "") and (root / split / "images").is_dir():
            return root / split
        if split in ("all", ""):
            return root
        require_dir(root / split / "images", f"the {split!r} split's images", LAYOUT)
        return root / split

    def splits(self, root) -> list[str]:
        root = Path(root)
        subs = [p.name for p in root.iterdir() if (p / "images").is_dir()] if root.is_dir() else []
        return (["all"] if (root / "images").is_dir() else []) + sorted(subs)

    def list_samples(self, root, split="all", ids=None) -> list[SampleRef]:
        base = self._base(Path(root), str(split))
        require_dir(base / "images", "an images/ folder", LAYOUT)
        refs = [SampleRef(p.stem, p, base / "masks" / f"{p.stem}.png")
                for p in sorted((base / "images").iterdir()) if p.suffix.lower() in IMAGE_EXT]
        return select_ids(non_empty(refs, str(base / "images"), LAYOUT), ids, str(base / "images"))

    def load(self, ref: SampleRef) -> LoadedSample:
        image = load_rgb(ref.image_path)
        if not ref.label_path.exists():
            raise BadSampleError(ref.label_path, "mask is missing", f"add masks/{ref.id}.png or drop the sample")
        gray = load_gray(ref.label_path)
        check_label_size(gray, image, ref.label_path)
        values = set(np.unique(gray).tolist())
        if not values <= {0, 255} and not values <= {0, 1}:
            raise BadSampleError(ref.label_path, f"mask has values {sorted(values)[:8]}, not 0/255 or 0/1",
                                 "binarise the mask (0 background, 255 hair)")
        return LoadedSample(ref.id, image, (gray > 0).astype(np.uint8))
