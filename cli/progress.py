"""The one progress bar: a rich bar on stderr, handed to library code as its progress factory."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# stderr, never break paths across lines; no markup: messages carry the user's paths and names, and a
# [bracket] in one would be taken for a style (dropped, or a MarkupError traceback).
err = Console(stderr=True, soft_wrap=True, markup=False)


@contextmanager
def rich_progress(label: str, total: int, done: int = 0) -> Iterator:
    """A bar with rate, ETA and a free-text field (loss, img/s ...); advance(n, info="")."""
    bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[info]}", markup=False), TimeElapsedColumn(), TimeRemainingColumn(),
                   console=err)
    task = bar.add_task(label, total=total, completed=done, info="")

    def advance(n: int = 1, info: str = "") -> None:
        bar.update(task, advance=n, info=info)

    with bar:
        yield advance
