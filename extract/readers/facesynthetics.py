"""Face Synthetics (Wood et al. 2021): NNNNNN.png with NNNNNN_seg.png (uint8 class labels).

--root may be the folder holding the renders or its parent holding dataset_100000/ (the published zip).
Label 13 is hair (-> 1), 255 is "ignore" and stays 255 (excluded from training and scoring), every other
class is background (-> 0).

There is no official split; ours is deterministic by the numeric id:
id % 10 == 9 -> test, id % 10 == 8 -> val, otherwise train (80/10/10); `all` is every render.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hairdiff.core.errors import BadSampleError
from hairdiff.core.labels import IGNORE
from hairdiff.extract.imageio import check_label_size, load_gray, load_rgb
from hairdiff.extract.readers.base import (Annotations, LoadedSample, SampleRef, by_id, list_files, non_empty,
                                           require_annotated, require_dir, select_ids, unknown_split)
from hairdiff.extract.readers.registry import Dataset

LAYOUT = "NNNNNN.png with NNNNNN_seg.png (optionally inside dataset_100000/)"
HAIR = 13  # Face Synthetics' class id of hair; its 255 is our IGNORE too
SPLITS = ("all", "train", "val", "test")


def split_of(sample_id: str) -> str:
    r = int(sample_id) % 10
    return "test" if r == 9 else "val" if r == 8 else "train"


def _render_id(path: Path) -> str | None:
    """000123.png -> "000123" (the extension in any case); segmentations and other files are not samples."""
    return path.stem if path.stem.isdigit() and path.suffix.lower() == ".png" else None


def render_dir(root: Path) -> Path:
    nested = root / "dataset_100000"
    return nested if nested.is_dir() and not any(_render_id(p) for p in list_files(root)) else root


class FaceSyntheticsReader:
    name = "facesynthetics"

    def splits(self, root) -> list[str]:
        return list(SPLITS)

    def list_samples(self, root, split, ids=None) -> list[SampleRef]:
        root = Path(root)
        require_dir(root, "the Face Synthetics renders", LAYOUT)
        base = render_dir(root)
        given, split = split, str(split).lower()
        if split not in SPLITS:
            raise unknown_split("facesynthetics", given, root, list(SPLITS), LAYOUT)
        files = list_files(base)
        images = by_id(files, _render_id, str(base))
        segs = Annotations(base, "the renders and their _seg.png files", LAYOUT, files)
        refs, found = [], 0
        for sid, path in images.items():
            if split == "all" or split_of(sid) == split:
                seg = segs.find(f"{sid}_seg.png")
                found += seg is not None
                refs.append(SampleRef(sid, path, seg or base / f"{sid}_seg.png"))
        non_empty(refs, f"{base} (split {split})", LAYOUT)
        return select_ids(require_annotated(refs, found, base, LAYOUT), ids, str(base))

    def load(self, ref: SampleRef) -> LoadedSample:
        image = load_rgb(ref.image_path)
        if ref.label_path is None or not os.path.lexists(ref.label_path):  # a dangling link: named when read
            raise BadSampleError(ref.label_path, "the segmentation file is missing",
                                 f"restore {ref.id}_seg.png, or leave {ref.id} out with --ids")
        seg = load_gray(ref.label_path, palette_indices=True)  # class ids, not colours
        check_label_size(seg, image, ref.label_path)
        label = np.where(seg == IGNORE, IGNORE, (seg == HAIR).astype(np.uint8)).astype(np.uint8)
        return LoadedSample(ref.id, image, label)


DATASET = Dataset("facesynthetics", FaceSyntheticsReader, layout=LAYOUT, splits="all, train, val, test (ours, by id)", paper_splits=("train", "test"))
