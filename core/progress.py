"""How library code reports progress without drawing anything: the command line draws the one bar.

A library function takes `progress: ProgressFactory`; it calls `progress(label, total, done)` once per
phase and gets a context manager yielding `advance(n, info="")`. `silent` is the default.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, ContextManager, Iterator

Advance = Callable[..., None]  # advance(n: int = 1, info: str = "")
ProgressFactory = Callable[[str, int, int], ContextManager[Advance]]


@contextmanager
def silent(label: str, total: int, done: int = 0) -> Iterator[Advance]:
    yield lambda n=1, info="": None
