"""CelebAMask-HQ: CelebA-HQ-img/<id>.jpg (1024) with CelebAMask-HQ-mask-anno/<id//2000>/<id:05d>_hair.png (512).

Ids are the image numbers ("0", "1", ...), listed in numeric order. Hair masks are 0/255 (stored 3-channel);
an annotated image without a `_hair.png` has no hair: its label is all background, at the size of that
id's other part masks. That is a label, not a missing file, and `pipeline extract` counts those samples.
An image with no part mask at all is not annotated (a partial copy, a lost file): a bad sample, named,
which --on-error handles; a missing `<id // 2000>` annotation folder is refused when listing.

Splits: `all` always. The official train/val/test need CelebA-HQ-to-CelebA-mapping.txt (columns
`idx orig_idx orig_file`, in the root) and CelebA's list_eval_partition.txt ("000001.jpg 0"; 0 train,
1 val, 2 test), looked up at $HAIRDIFF_CELEBA_PARTITION, <root>/, <root>/.., <root>/Anno/ and <root>/../Eval/.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from hairdiff.core.errors import BadSampleError, DatasetError
from hairdiff.extract.imageio import check_label_size, load_gray, load_rgb
from hairdiff.extract.readers.base import (Annotations, LoadedSample, SampleRef, by_id, list_files, non_empty,
                                           require_annotated, require_dir, select_ids, unknown_split)
from hairdiff.extract.readers.registry import Dataset

LAYOUT = "CelebA-HQ-img/<id>.jpg and CelebAMask-HQ-mask-anno/<id // 2000>/<id:05d>_hair.png"
ANNOTATION_SIZE = 512
PARTITIONS = {"train": "0", "val": "1", "test": "2"}
MAPPING = "CelebA-HQ-to-CelebA-mapping.txt"
PARTITION = "list_eval_partition.txt"
PARTITION_ENV = "HAIRDIFF_CELEBA_PARTITION"


def find_mapping(root: Path) -> Path | None:
    for p in (root / MAPPING, root.parent / MAPPING):
        if p.is_file():
            return p
    return None


def find_partition(root: Path) -> Path | None:
    env = os.environ.get(PARTITION_ENV)
    if env:
        if not Path(env).is_file():
            raise DatasetError(f"${PARTITION_ENV} points at {env}, which is not a file. "
                               f"Fix: set it to CelebA's {PARTITION} or unset it")
        return Path(env)
    for p in (root / PARTITION, root.parent / PARTITION, root / "Anno" / PARTITION, root.parent / "Eval" / PARTITION):
        if p.is_file():
            return p
    return None


def _read_partition(path: Path) -> dict[str, str]:
    part = {}
    for line in path.read_text().splitlines():
        bits = line.split()
        if len(bits) == 2 and bits[1] in ("0", "1", "2"):
            part[bits[0]] = bits[1]
    if not part:
        raise DatasetError(f"{path}: no '<file>.jpg <0|1|2>' lines. Fix: use CelebA's own {PARTITION}")
    return part


def official_split(root: Path, split: str) -> set[str]:
    """The HQ ids whose original CelebA image is in `split` of CelebA's evaluation partition."""
    mapping, partition = find_mapping(root), find_partition(root)
    if mapping is None or partition is None:
        missing = [n for n, p in ((MAPPING, mapping), (PARTITION, partition)) if p is None]
        raise DatasetError(f"split {split!r} needs {' and '.join(missing)}, not found in {root} or {root.parent}. "
                           f"Fix: add them (or set ${PARTITION_ENV}), or use --split all or --ids FILE")
    part = _read_partition(partition)
    lines = mapping.read_text().splitlines()
    header = lines[0].split() if lines else []
    if "idx" not in header or "orig_file" not in header:
        raise DatasetError(f"{mapping}: expected a header 'idx orig_idx orig_file'. Fix: use the file shipped "
                           "with CelebAMask-HQ")
    c_idx, c_file = header.index("idx"), header.index("orig_file")
    keep = set()
    for line in lines[1:]:
        bits = line.split()
        if len(bits) > max(c_idx, c_file) and part.get(bits[c_file]) == PARTITIONS[split]:
            keep.add(str(int(bits[c_idx])))
    return keep


def annotation_size(anno_dir: Path, sample_id: str) -> tuple[int, int] | None:
    """(h, w) of this id's other part masks, or None when it has none that opens."""
    prefix = f"{int(sample_id):05d}_"
    for p in list_files(anno_dir) if anno_dir.is_dir() else []:
        if not (p.name.startswith(prefix) and p.suffix.lower() == ".png"):
            continue
        try:
            with Image.open(p) as im:  # header only: no pixel decoding
                return im.size[1], im.size[0]
        except OSError:
            continue  # a broken other-part mask says nothing about the size; try the next
    return None


def _image_id(path: Path) -> str | None:
    """12.jpg -> "12" (the extension in any case); other files are not samples."""
    return str(int(path.stem)) if path.stem.isdigit() and path.suffix.lower() == ".jpg" else None


class CelebAMaskReader:
    name = "celebamask"

    def splits(self, root) -> list[str]:
        root = Path(root)
        has_official = find_mapping(root) is not None and find_partition(root) is not None
        return ["all"] + (list(PARTITIONS) if has_official else [])

    def list_samples(self, root, split, ids=None) -> list[SampleRef]:
        root = Path(root)
        img_dir, anno = root / "CelebA-HQ-img", root / "CelebAMask-HQ-mask-anno"
        require_dir(img_dir, "the CelebAMask-HQ images CelebA-HQ-img/", LAYOUT)
        require_dir(anno, "the CelebAMask-HQ annotations CelebAMask-HQ-mask-anno/", LAYOUT)
        given, split = split, str(split).lower()
        if split != "all" and split not in PARTITIONS:
            raise unknown_split("celebamask", given, root, ["all", *PARTITIONS], LAYOUT)
        images = by_id(list_files(img_dir), _image_id, str(img_dir))
        ordered = sorted(images, key=int)
        if split != "all":
            keep = official_split(root, split)
            ordered = [i for i in ordered if i in keep]
        listed = [SampleRef(i, images[i], None) for i in non_empty(ordered, f"{img_dir} (split {split})", LAYOUT)]
        folders: dict[int, tuple[Annotations, set[str]]] = {}
        refs, annotated = [], 0
        for ref in select_ids(listed, ids, str(img_dir)):
            k = int(ref.id) // 2000
            if k not in folders:
                if not (anno / str(k)).is_dir():
                    raise DatasetError(f"{anno / str(k)} is missing: it holds the annotations of images "
                                       f"{2000 * k}..{2000 * k + 1999} (e.g. {ref.image_path}). Fix: restore it "
                                       f"from CelebAMask-HQ, or leave those ids out with --ids")
                parts = Annotations(anno / str(k), f"annotation folder {k}", LAYOUT)
                # The ids with any part mask: the images that were annotated at all.
                folders[k] = parts, {n.split("_", 1)[0] for n in parts.names() if "_" in n and n.endswith(".png")}
            parts, ids_annotated = folders[k]
            name = f"{int(ref.id):05d}_hair.png"
            hair = parts.find(name)
            seen = f"{int(ref.id):05d}" in ids_annotated
            annotated += seen
            # No _hair.png: hair-free where the image is annotated (other part masks), else not annotated.
            refs.append(SampleRef(ref.id, ref.image_path, hair or parts.folder / name, no_hair=hair is None and seen))
        return require_annotated(refs, annotated, anno, LAYOUT)

    def load(self, ref: SampleRef) -> LoadedSample:
        image = load_rgb(ref.image_path)
        label_path = Path(ref.label_path)
        if not ref.no_hair:
            if not os.path.lexists(label_path):  # a dangling link is named when read
                raise BadSampleError(label_path, f"image {ref.id} has no annotation at all (no "
                                                 f"{int(ref.id):05d}_*.png part mask in {label_path.parent})",
                                     f"restore its CelebAMask-HQ annotation files, or leave {ref.id} out with --ids")
            gray = load_gray(label_path)
            check_label_size(gray, image, label_path)
            return LoadedSample(ref.id, image, (gray > 127).astype(np.uint8))
        # An annotated image without _hair.png: this person has no visible hair, which is a label, not a gap.
        size = annotation_size(label_path.parent, ref.id)
        if size is None:
            raise BadSampleError(label_path, f"image {ref.id} has no _hair.png and no other part mask that opens "
                                             "(removed since listing?)",
                                 f"restore its annotation files, or leave {ref.id} out with --ids")
        label = np.zeros(size, np.uint8)
        check_label_size(label, image, label_path)
        return LoadedSample(ref.id, image, label)


DATASET = Dataset("celebamask", CelebAMaskReader, layout=LAYOUT, splits="all; train, val, test with the CelebA partition files", paper_splits=("train", "test"))
