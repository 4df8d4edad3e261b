"""Users' own data: <root>[/<split>]/images/<stem>.<jpg|jpeg|png|bmp|webp> with .../masks/<stem>.png.

Splits: `all` is <root>/images; any <root>/<name>/images folder is split <name>.
Mask rule: a greyscale (or 3-channel grey) PNG at the image's aspect ratio, with values {0, 255} or {0, 1}:
0 is background, nonzero is hair. With FolderReader(ignore_255=True), 255 means "ignore" instead and the
values must be within {0, 1, 255}. Any other value (JPEG-compressed, anti-aliased or multi-class masks)
is a BadSampleError naming the file: binarise the mask first. Palette masks are read by colour
brightness, like the greyscale they display as.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hairdiff.core.errors import BadSampleError
from hairdiff.core.labels import IGNORE
from hairdiff.extract.readers.base import (Annotations, LoadedSample, SampleRef, by_id, list_files, load_image_and_mask,
                                           non_empty, require_annotated, require_dir, select_ids, unknown_split)
from hairdiff.extract.readers.registry import Dataset

LAYOUT = "images/<stem>.jpg|jpeg|png|bmp|webp with masks/<stem>.png (optionally under <split>/)"
IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _image_id(path: Path) -> str | None:
    return path.stem if path.suffix.lower() in IMAGE_EXT else None


class FolderReader:
    name = "folder"

    def __init__(self, ignore_255: bool = False):
        self.ignore_255 = ignore_255

    def splits(self, root) -> list[str]:
        root = Path(root)
        subs = sorted(p.name for p in root.iterdir() if (p / "images").is_dir()) if root.is_dir() else []
        return (["all"] if (root / "images").is_dir() else []) + subs

    def _base(self, root: Path, split: str) -> Path:
        require_dir(root, "a dataset folder", LAYOUT)
        if split == "all" and (root / "images").is_dir():
            return root
        if split and split != "all" and (root / split / "images").is_dir():
            return root / split
        raise unknown_split("folder", split, root, self.splits(root), LAYOUT)

    def list_samples(self, root, split="all", ids=None) -> list[SampleRef]:
        base = self._base(Path(root), str(split))
        images = by_id(list_files(base / "images"), _image_id, str(base / "images"))
        non_empty(list(images), str(base / "images"), LAYOUT)
        masks = Annotations(base / "masks", "the masks folder masks/", LAYOUT)
        refs, found = [], 0
        for sid, path in images.items():
            mask = masks.find(f"{sid}.png")
            found += mask is not None
            refs.append(SampleRef(sid, path, mask or masks.folder / f"{sid}.png"))
        return select_ids(require_annotated(refs, found, masks.folder, LAYOUT), ids, str(base / "images"))

    def load(self, ref: SampleRef) -> LoadedSample:
        image, gray = load_image_and_mask(
            ref, f"add masks/{ref.id}.png (0 background, 255 hair), or leave {ref.id} out with --ids")
        values = set(np.unique(gray).tolist())
        if self.ignore_255:
            if not values <= {0, 1, IGNORE}:
                raise BadSampleError(ref.label_path, f"mask has values {sorted(values)[:8]}, not within 0/1/255",
                                     "write 0 for background, 1 for hair and 255 for ignore")
            return LoadedSample(ref.id, image, gray.astype(np.uint8))
        if not values <= {0, 255} and not values <= {0, 1}:
            raise BadSampleError(ref.label_path, f"mask has values {sorted(values)[:8]}, not 0/255 or 0/1",
                                 "binarise the mask (0 background, 255 hair), saved as PNG")
        return LoadedSample(ref.id, image, (gray > 0).astype(np.uint8))


DATASET = Dataset("folder", FolderReader, layout=LAYOUT, splits="all, or the name of a <split>/ subfolder", paper_splits=None)
