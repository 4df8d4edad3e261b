"""Face Synthetics (Wood et al. 2021): NNNNNN.png with NNNNNN_seg.png (uint8 labels).

Label 13 is hair (-> 1), 255 is "ignore" and stays 255 (excluded from training and scoring), every other
class is background (-> 0). There is no official split; ours is deterministic by the numeric id:
id % 10 == 9 -> test, id % 10 == 8 -> val, otherwise train (80/10/10), and `all`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from extract.imageio import check_label_size, load_gray, load_rgb
from extract.readers.base import LoadedSample, SampleRef, non_empty, require_dir, select_ids
from extract.readers.errors import DatasetError

LAYOUT = "NNNNNN.png with NNNNNN_seg.png"
HAIR, IGNORE = 13, 255


def split_of(sample_id: str) -> str:
    r = int(sample_id) % 10
    return "test" if r == 9 else "val" if r == 8 else "train"


class FaceSyntheticsReader:
    name = "facesynthetics"

    def splits(self, root) -> list[str]:
        return ["all", "train", "val", "test"]

    def list_samples(self, root, split, ids=None) -> list[SampleRef]:
        root = Path(root)
        require_dir(root, "the Face Synthetics folder", LAYOUT)
        split = str(split).lower()
        if split not in ("all", "train", "val", "test"):
            raise DatasetError(f"facesynthetics has no split {split!r}: use all, train, val or test")
        refs = [SampleRef(p.stem, p, root / f"{p.stem}_seg.png")
                for p in sorted(root.glob("[0-9]*.png")) if p.stem.isdigit()]
        if split != "all":
            refs = [r for r in refs if split_of(r.id) == split]
        return select_ids(non_empty(refs, str(root), LAYOUT), ids, str(root))

    def load(self, ref: SampleRef) -> LoadedSample:
        image = load_rgb(ref.image_path)
        seg = load_gray(ref.label_path)
        check_label_size(seg, image, ref.label_path)
        label = np.where(seg == IGNORE, IGNORE, (seg == HAIR).astype(np.uint8)).astype(np.uint8)
        return LoadedSample(ref.id, image, label)
