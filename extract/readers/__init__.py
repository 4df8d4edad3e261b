"""Dataset readers in the published layouts; each yields id, RGB image and hair label."""
from __future__ import annotations

from extract.readers.base import LoadedSample, SampleRef
from extract.readers.celebamask import CelebAMaskReader
from extract.readers.errors import BadSampleError, DatasetError
from extract.readers.facesynthetics import FaceSyntheticsReader
from extract.readers.figaro import FigaroReader
from extract.readers.folder import FolderReader

_READERS = {r.name: r for r in (FigaroReader, CelebAMaskReader, FaceSyntheticsReader, FolderReader)}
READERS = tuple(_READERS)


def get_reader(name: str):
    try:
        return _READERS[name]()
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}: use one of {', '.join(READERS)}") from None


__all__ = ["BadSampleError", "DatasetError", "LoadedSample", "READERS", "SampleRef", "get_reader"]
