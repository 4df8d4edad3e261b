"""What every dataset reader yields, and the listing checks they share."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hairdiff.core.errors import DatasetError


@dataclass(frozen=True)
class SampleRef:
    id: str
    image_path: Path
    label_path: Path | None


@dataclass
class LoadedSample:
    id: str
    image: np.ndarray  # (H, W, 3) uint8 RGB, EXIF orientation applied
    label: np.ndarray  # (h, w) uint8 at the annotation's own resolution: 0 background, 1 hair, 255 ignore


def require_dir(path: Path, what: str, layout: str) -> None:
    if not path.is_dir():
        raise DatasetError(f"{path} does not exist or is not a folder: expected {what} there "
                           f"(published layout: {layout}). Fix: point --root at the dataset's top folder")


def unknown_split(dataset: str, split, root: Path, valid: list[str], layout: str) -> DatasetError:
    choices = ", ".join(valid[:-1]) + " or " + valid[-1] if len(valid) > 1 else (valid or ["<none found>"])[0]
    return DatasetError(f"{dataset} has no split {split!r} under {root} (published layout: {layout}). "
                        f"Fix: use --split {choices}, or check --root")


def select_ids(refs: list[SampleRef], ids: list[str] | None, where: str) -> list[SampleRef]:
    """Keep only `ids` (duplicates collapse), still in the split's id order; unknown ids are an error."""
    if ids is None:
        return refs
    wanted = {str(i).strip() for i in ids}
    known = {r.id for r in refs}
    unknown = [i for i in dict.fromkeys(str(i).strip() for i in ids) if i not in known]
    if unknown:
        shown = ", ".join(unknown[:10]) + (f" (+{len(unknown) - 10} more)" if len(unknown) > 10 else "")
        raise DatasetError(f"{len(unknown)} ids not found in {where}: {shown}. "
                           "Fix: correct the --ids file or the --split it is used with")
    return [r for r in refs if r.id in wanted]


def non_empty(refs: list[SampleRef], where: str, layout: str) -> list[SampleRef]:
    if not refs:
        raise DatasetError(f"no samples found in {where}: expected {layout}. "
                           "Fix: check --root and --split (or the file names)")
    return refs


def load_image_and_mask(ref: SampleRef, missing_fix: str):
    """The image and its mask file as a 2-D array, or a BadSampleError naming the missing or mismatched mask."""
    from hairdiff.extract.imageio import check_label_size, load_gray, load_rgb
    from hairdiff.core.errors import BadSampleError

    image = load_rgb(ref.image_path)
    if ref.label_path is None or not Path(ref.label_path).exists():
        raise BadSampleError(ref.label_path, "the mask is missing", missing_fix)
    gray = load_gray(ref.label_path)
    check_label_size(gray, image, ref.label_path)
    return image, gray
