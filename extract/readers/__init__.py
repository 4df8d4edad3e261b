"""Dataset readers in the published layouts; each yields id, RGB image and hair label.

Reader modules are imported on first use: extract.imageio imports this package's errors, and the readers
import hairdiff.extract.imageio, so importing them here would make `import hairdiff.extract.imageio` circular.
"""
from __future__ import annotations

from importlib import import_module

from hairdiff.extract.readers.base import LoadedSample, SampleRef
from hairdiff.core.errors import BadSampleError, DatasetError
from hairdiff.extract.readers.ids import read_ids_file

_READERS = {
    "figaro": ("hairdiff.extract.readers.figaro", "FigaroReader"),
    "celebamask": ("hairdiff.extract.readers.celebamask", "CelebAMaskReader"),
    "facesynthetics": ("hairdiff.extract.readers.facesynthetics", "FaceSyntheticsReader"),
    "folder": ("hairdiff.extract.readers.folder", "FolderReader"),
}
READERS = tuple(_READERS)


def get_reader(name: str, **options):
    """A reader instance; options go to its constructor (only `folder` has one: ignore_255)."""
    try:
        module, cls = _READERS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}. Fix: use one of {', '.join(READERS)}") from None
    return getattr(import_module(module), cls)(**options)


def default_split(reader, root) -> str:
    """The split to use when --split is not given: every sample ('all') where the dataset has that, the
    training split of a dataset published in splits (Figaro's Training), else the only split there is."""
    found = reader.splits(root)
    for choice in ("all", "Training"):
        if choice in found:
            return choice
    if len(found) == 1:
        return found[0]
    if not found:
        reader.list_samples(root, "all")  # raises the reader's own error naming the root and the layout
    raise DatasetError(f"--split is needed: {reader.name} under {root} has the splits {', '.join(found)}; "
                       f"pass one with --split")


__all__ = ["default_split", "BadSampleError", "DatasetError", "LoadedSample", "READERS", "SampleRef", "get_reader", "read_ids_file"]
