"""Figaro-1k: Original/<split>/FrameNNNNN-org.jpg with GT/<split>/FrameNNNNN-gt.pbm.

Splits are Training and Testing; train/test and any letter case are accepted as aliases. The GT masks are
1-bit PBM; hair is white (checked on the real masks: white covers the hair, the corners are black).
PIL reads the PBM as mode "1" with white = True, which load_gray turns into 255.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hairdiff.extract.readers.base import (Annotations, LoadedSample, SampleRef, by_id, list_files, load_image_and_mask,
                                           non_empty, require_annotated, require_dir, select_ids, unknown_split)
from hairdiff.extract.readers.registry import Dataset

LAYOUT = "Original/<split>/FrameNNNNN-org.jpg and GT/<split>/FrameNNNNN-gt.pbm"
SPLITS = ("Training", "Testing")
ALIASES = {"training": "Training", "train": "Training", "testing": "Testing", "test": "Testing"}


def _frame_id(path: Path) -> str | None:
    """Frame00001-org.jpg -> Frame00001 (any image extension); other files are not samples."""
    name = path.name
    return name.split("-org")[0] if name.startswith("Frame") and "-org." in name else None


class FigaroReader:
    name = "figaro"

    def splits(self, root) -> list[str]:
        return [s for s in SPLITS if (Path(root) / "Original" / s).is_dir()]

    def list_samples(self, root, split, ids=None) -> list[SampleRef]:
        root = Path(root)
        require_dir(root / "Original", "the Figaro-1k images folder Original/", LAYOUT)
        name = ALIASES.get(str(split).lower())
        if name is None:
            raise unknown_split("figaro", split, root, list(SPLITS), LAYOUT)
        img_dir = root / "Original" / name
        require_dir(img_dir, f"the {name} images", LAYOUT)
        images = by_id(list_files(img_dir), _frame_id, str(img_dir))
        non_empty(list(images), str(img_dir), LAYOUT)
        gt = Annotations(root / "GT" / name, f"the {name} masks GT/{name}/", LAYOUT)
        refs, found = [], 0
        for sid, path in images.items():
            label = gt.find(f"{sid}-gt.pbm")
            found += label is not None
            refs.append(SampleRef(sid, path, label or gt.folder / f"{sid}-gt.pbm"))
        require_annotated(refs, found, gt.folder, LAYOUT)
        return select_ids(refs, ids, str(img_dir))

    def load(self, ref: SampleRef) -> LoadedSample:
        image, gray = load_image_and_mask(
            ref, f"restore GT/<split>/{ref.id}-gt.pbm, or leave {ref.id} out with --ids")
        return LoadedSample(ref.id, image, (gray > 127).astype(np.uint8))


DATASET = Dataset("figaro", FigaroReader, layout=LAYOUT, splits="Training, Testing (train, test)", paper_splits=("Training", "Testing"))
