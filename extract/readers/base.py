"""What every dataset reader yields, and the listing they share.

Every reader lists its files through `list_files` + `by_id` (images) and `Annotations` (their labels), so
every dataset obeys the same rules:
- a file that cannot be opened (a link whose target is gone, no permission) is listed like any other and
  fails when it is loaded, named, as a bad sample that --on-error handles; it is never dropped unseen;
- two files that claim one id are an error naming both (x.jpg and x.png, 1.jpg and 01.jpg);
- an id holding VIEW_SEP is refused: augmented views are stored as `<id>@<view>`, so such an id would
  collide with a view's (the fix is to rename the file);
- annotation files are matched by name without regard to the case of their extension (x.PNG for x.png);
- a missing annotation folder, or one holding none of the split's annotations, is an error, not a split
  of unlabelled images. "No hair" is inferred from an absent annotation only where the published layout
  defines it (CelebAMask-HQ: an annotated image without `_hair.png`); those samples carry `no_hair` and
  `pipeline extract` counts them in its summary.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from hairdiff.cache.layout import VIEW_SEP
from hairdiff.core.errors import DatasetError
from hairdiff.extract.readers.ids import unknown_hint


@dataclass(frozen=True)
class SampleRef:
    id: str
    image_path: Path
    label_path: Path | None
    # The layout defines this image's absent annotation as "no hair" (label_path names the absent file).
    no_hair: bool = False


@dataclass
class LoadedSample:
    id: str
    image: np.ndarray  # (H, W, 3) uint8 RGB, EXIF orientation applied
    label: np.ndarray  # (h, w) uint8 at the annotation's own resolution: 0 background, 1 hair, 255 ignore


def list_files(folder: Path) -> list[Path]:
    """The entries of a folder that are not folders, sorted by name: files, links to files, and links whose
    target is missing (which then fail, named, when loaded)."""
    with os.scandir(folder) as entries:
        return sorted(Path(e.path) for e in entries if not e.is_dir())


def by_id(files: Iterable[Path], id_of: Callable[[Path], str | None], where: str) -> dict[str, Path]:
    """{id: file} for the files `id_of` gives an id (None: not a sample file), in the files' order.
    DatasetError for two files claiming one id (naming both) and for an id holding VIEW_SEP."""
    found: dict[str, Path] = {}
    for path in files:
        sid = id_of(path)
        if sid is None:
            continue
        if VIEW_SEP in sid:
            raise DatasetError(f"{path}: its id {sid!r} holds {VIEW_SEP!r}, which names augmented views "
                               f"(<id>{VIEW_SEP}<view>) in the feature store. Fix: rename the file (and its "
                               f"annotation) without {VIEW_SEP!r}")
        if sid in found:
            raise DatasetError(f"{found[sid]} and {path} both claim the sample id {sid!r} in {where}. Fix: remove or "
                               f"rename one of them")
        found[sid] = path
    return found


class Annotations:
    """The annotation files of one folder, found by name regardless of the case of their extension."""

    def __init__(self, folder: Path, what: str, layout: str, files: list[Path] | None = None):
        """files: the folder's listing when the caller has it already (images and labels in one folder)."""
        if files is None:
            require_dir(folder, what, layout, "restore the annotations there, or point --root at the dataset's "
                                              "top folder")
            files = list_files(folder)
        self.folder = folder
        self._names: dict[str, list[Path]] = {}
        for path in files:
            stem, ext = os.path.splitext(path.name)
            self._names.setdefault(stem + ext.lower(), []).append(path)

    def find(self, name: str) -> Path | None:
        """The file called `name` (its extension in any case), or None."""
        stem, ext = os.path.splitext(name)
        found = self._names.get(stem + ext.lower(), [])
        if len(found) > 1:
            raise DatasetError(f"{' and '.join(map(str, found))} are one annotation under two names. Fix: keep one")
        return found[0] if found else None

    def names(self) -> list[str]:
        """Every file name, extensions lower-cased."""
        return list(self._names)


def require_annotated(refs: list[SampleRef], found: int, folder: Path, layout: str) -> list[SampleRef]:
    """DatasetError when none of a split's images has its annotation (`found` of them have): an annotation
    folder emptied or mislaid is not a split of unlabelled images."""
    if refs and not found:
        raise DatasetError(f"{folder} holds none of the annotations of the {len(refs)} images listed (e.g. "
                           f"{refs[0].label_path}; published layout: {layout}). Fix: restore the annotation files")
    return refs


def require_dir(path: Path, what: str, layout: str, fix: str = "point --root at the dataset's top folder") -> None:
    if not path.is_dir():
        raise DatasetError(f"{path} does not exist or is not a folder: expected {what} there "
                           f"(published layout: {layout}). Fix: {fix}")


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
        raise DatasetError(f"{len(unknown)} ids not found in {where}: {shown}{unknown_hint(unknown)}. "
                           "Fix: correct the --ids file or the --split it is used with")
    return [r for r in refs if r.id in wanted]


def non_empty(refs: list[SampleRef], where: str, layout: str) -> list[SampleRef]:
    if not refs:
        raise DatasetError(f"no samples found in {where}: expected {layout}. "
                           "Fix: check --root and --split (or the file names)")
    return refs


def load_image_and_mask(ref: SampleRef, missing_fix: str):
    """The image and its mask file as a 2-D array, or a BadSampleError naming the missing or mismatched mask."""
    from hairdiff.core.errors import BadSampleError
    from hairdiff.extract.imageio import check_label_size, load_gray, load_rgb

    image = load_rgb(ref.image_path)
    if ref.label_path is None or not os.path.lexists(ref.label_path):  # a dangling link: named when read
        raise BadSampleError(ref.label_path, "the mask is missing", missing_fix)
    gray = load_gray(ref.label_path)
    check_label_size(gray, image, ref.label_path)
    return image, gray
