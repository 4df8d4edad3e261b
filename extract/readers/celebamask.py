"""CelebAMask-HQ: CelebA-HQ-img/<id>.jpg (1024) with CelebAMask-HQ-mask-anno/<id//2000>/<id:05d>_hair.png (512).

An image without a `_hair.png` has no hair: its label is all background at the annotation resolution.
Official splits come from CelebA-HQ-to-CelebA-mapping.txt (orig_file column) and CelebA's
list_eval_partition.txt (0 train, 1 val, 2 test), looked up in the root or its parent; `all` always works.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from extract.imageio import check_label_size, load_gray, load_rgb
from extract.readers.base import LoadedSample, SampleRef, non_empty, require_dir, select_ids
from extract.readers.errors import DatasetError

LAYOUT = "CelebA-HQ-img/<id>.jpg and CelebAMask-HQ-mask-anno/<id // 2000>/<id:05d>_hair.png"
ANNOTATION_SIZE = 512
PARTITIONS = {"train": "0", "val": "1", "test": "2"}


def _find(root: Path, name: str) -> Path | None:
    for p in (root / name, root.parent / name, root / "Anno" / name, root.parent / "Eval" / name):
        if p.is_file():
            return p
    return None


def official_split(root: Path, split: str) -> set[str]:
    mapping, partition = _find(root, "CelebA-HQ-to-CelebA-mapping.txt"), _find(root, "list_eval_partition.txt")
    if mapping is None or partition is None:
        raise DatasetError(f"split {split!r} needs CelebA-HQ-to-CelebA-mapping.txt and list_eval_partition.txt in "
                           f"{root} or its parent: add them, or use --split all or --ids FILE")
    part = {}
    for line in partition.read_text().split("\n"):
        bits = line.split()
        if len(bits) == 2:
            part[bits[0]] = bits[1]
    keep = set()
    for line in mapping.read_text().split("\n")[1:]:
        bits = line.split()
        if len(bits) >= 3 and part.get(bits[2]) == PARTITIONS[split]:
            keep.add(str(int(bits[0])))
    return keep


class CelebAMaskReader:
    name = "celebamask"

    def splits(self, root) -> list[str]:
        return ["all", "train", "val", "test"]

    def list_samples(self, root, split, ids=None) -> list[SampleRef]:
        root = Path(root)
        img_dir, anno = root / "CelebA-HQ-img", root / "CelebAMask-HQ-mask-anno"
        require_dir(img_dir, "the CelebAMask-HQ images", LAYOUT)
        require_dir(anno, "the CelebAMask-HQ annotations", LAYOUT)
        split = str(split).lower()
        if split != "all" and split not in PARTITIONS:
            raise DatasetError(f"celebamask has no split {split!r}: use all, train, val or test")
        stems = sorted((p.stem for p in img_dir.glob("*.jpg") if p.stem.isdigit()), key=int)
        if split != "all":
            keep = official_split(root, split)
            stems = [s for s in stems if s in keep]
        refs = [SampleRef(s, img_dir / f"{s}.jpg", anno / str(int(s) // 2000) / f"{int(s):05d}_hair.png")
                for s in stems]
        return select_ids(non_empty(refs, str(img_dir), LAYOUT), ids, str(img_dir))

    def load(self, ref: SampleRef) -> LoadedSample:
        image = load_rgb(ref.image_path)
        if ref.label_path.exists():
            gray = load_gray(ref.label_path)
            check_label_size(gray, image, ref.label_path)
            return LoadedSample(ref.id, image, (gray > 127).astype(np.uint8))
        # No _hair.png: this person has no visible hair, which is a label, not a gap.
        return LoadedSample(ref.id, image, np.zeros((ANNOTATION_SIZE, ANNOTATION_SIZE), np.uint8))
