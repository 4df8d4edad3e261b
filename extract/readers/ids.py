"""`--ids FILE`: one sample id per line; '#' starts a comment; blank lines and surrounding spaces are ignored."""
from __future__ import annotations

from pathlib import Path

from hairdiff.core.errors import DatasetError


def read_ids_file(path) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: ids file not found. Fix: pass a text file with one sample id per line")
    ids = [line.split("#", 1)[0].strip() for line in p.read_text(encoding="utf-8-sig").splitlines()]
    ids = list(dict.fromkeys(i for i in ids if i))  # first occurrence wins; a repeated id is one sample
    if not ids:
        raise DatasetError(f"{p}: the file holds no ids. Fix: put one sample id per line")
    return ids
