"""`--ids FILE`: one sample id per line, '#' starts a comment."""
from __future__ import annotations

from pathlib import Path

from extract.readers.errors import DatasetError


def read_ids_file(path) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: ids file not found; pass a text file with one sample id per line")
    ids = [line.split("#", 1)[0].strip() for line in p.read_text().splitlines()]
    ids = [i for i in ids if i]
    if not ids:
        raise DatasetError(f"{p}: no ids in the file; put one sample id per line")
    return ids
