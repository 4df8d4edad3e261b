"""What every dataset reader yields, and the shared listing checks."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from extract.readers.errors import DatasetError


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
        raise DatasetError(f"{path} does not exist or is not a folder: expected {what} ({layout}); "
                           "check --root and --split")


def select_ids(refs: list[SampleRef], ids: list[str] | None, where: str) -> list[SampleRef]:
    if ids is None:
        return refs
    by_id = {r.id: r for r in refs}
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise DatasetError(f"{len(unknown)} ids not found in {where}: {', '.join(unknown[:10])}: "
                           "fix the --ids file")
    return sorted((by_id[i] for i in dict.fromkeys(ids)), key=lambda r: refs.index(r))


def non_empty(refs: list[SampleRef], where: str, layout: str) -> list[SampleRef]:
    if not refs:
        raise DatasetError(f"no samples found in {where}: expected {layout}; check --root and --split")
    return refs
