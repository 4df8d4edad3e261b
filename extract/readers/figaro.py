"""Figaro-1k: Original/<split>/FrameNNNNN-org.jpg with GT/<split>/FrameNNNNN-gt.pbm (1-bit, hair white)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from extract.imageio import check_label_size, load_gray, load_rgb
from extract.readers.base import LoadedSample, SampleRef, non_empty, require_dir, select_ids
from extract.readers.errors import BadSampleError, DatasetError

LAYOUT = "Original/<split>/FrameNNNNN-org.jpg and GT/<split>/FrameNNNNN-gt.pbm"
SPLITS = {"training": "Training", "train": "Training", "testing": "Testing", "test": "Testing"}


class FigaroReader:
    name = "figaro"

    def splits(self, root) -> list[str]:
        return [s for s in ("Training", "Testing") if (Path(root) / "Original" / s).is_dir()]

    def list_samples(self, root, split, ids=None) -> list[SampleRef]:
        root = Path(root)
        require_dir(root / "Original", "the Figaro-1k root", LAYOUT)
        name = SPLITS.get(str(split).lower())
        if name is None:
            raise DatasetError(f"figaro has no split {split!r}: use Training or Testing")
        img_dir = root / "Original" / name
        require_dir(img_dir, f"the {name} images", LAYOUT)
        refs = []
        for p in sorted(img_dir.glob("Frame*-org.*")):
            sid = p.name.split("-org")[0]
            refs.append(SampleRef(sid, p, root / "GT" / name / f"{sid}-gt.pbm"))
        return select_ids(non_empty(refs, str(img_dir), LAYOUT), ids, str(img_dir))

    def load(self, ref: SampleRef) -> LoadedSample:
        image = load_rgb(ref.image_path)
        if not ref.label_path.exists():
            raise BadSampleError(ref.label_path, "mask is missing", "restore the GT file or drop the sample via --ids")
        gray = load_gray(ref.label_path)
        check_label_size(gray, image, ref.label_path)
        return LoadedSample(ref.id, image, (gray > 127).astype(np.uint8))
