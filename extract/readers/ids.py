"""`--ids FILE`: one sample id per line; blank lines and surrounding spaces are ignored.

A line whose first character (after spaces) is `#` is a comment. Anywhere else `#` is part of the id: file
names hold it (`photo #2.jpg` is the id `photo #2`), so a comment after an id would cut a real name. An id
that itself starts with `#` (or with a backslash) is written with one backslash before it: `\\#1` lists `#1`.
"""
from __future__ import annotations

from pathlib import Path

from hairdiff.core.errors import DatasetError

COMMENT, ESCAPE = "#", "\\"
# Said wherever ids files are explained (options' help, errors about unknown ids).
SYNTAX = ("one id per line; a line starting with # is a comment; # elsewhere is part of the id; write an id "
          "that starts with # or \\ as \\#id or \\\\id")


def parse_id_line(line: str) -> str | None:
    """The id a line lists, or None for a blank or comment line."""
    text = line.strip()
    if not text or text.startswith(COMMENT):
        return None
    return text[1:] if text.startswith(ESCAPE) else text


def id_line(sample_id: str) -> str:
    """The line that lists `sample_id` (parse_id_line's inverse), as reproduce writes its split files."""
    return ESCAPE + sample_id if sample_id.startswith((COMMENT, ESCAPE)) else sample_id


def read_ids_file(path) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: ids file not found. Fix: pass a text file with one sample id per line")
    ids = [parse_id_line(line) for line in p.read_text(encoding="utf-8-sig").splitlines()]
    ids = list(dict.fromkeys(i for i in ids if i))  # first occurrence wins; a repeated id is one sample
    if not ids:
        raise DatasetError(f"{p}: the file holds no ids. Fix: put one sample id per line ({SYNTAX})")
    return ids


def unknown_hint(unknown: list[str]) -> str:
    """A note for unknown ids that hold `#` (a comment after an id is read as part of it), else ''."""
    if any(COMMENT in i for i in unknown):
        return " (# is part of an id except at the start of a line: put comments on lines of their own)"
    return ""
