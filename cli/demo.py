"""`pipeline demo`: extract -> train -> eval on built-in data with the tiny model, a table at the end."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from hairdiff.cli.progress import err, rich_progress
from hairdiff.demo.run import DemoConfig
from hairdiff.evaluate.metrics import SUMMARY_KEYS as KEYS
from hairdiff.evaluate.report import interval_of, intervals_note, with_interval


def demo(cfg: DemoConfig) -> None:
    """Run extract -> train -> eval on built-in data with the tiny model (CPU, a few minutes).

    The tiny model has random weights: the numbers show the pipeline works, not how good the method is.
    """
    from hairdiff.demo.run import run_demo

    m = run_demo(cfg, progress=rich_progress, log=err.print)
    table = Table(title=f"hairdiff demo: held-out procedural images ({cfg.test_images}), tiny random-weight model")
    for key in KEYS:
        table.add_column(key)
    table.add_row(*[with_interval(m[k], interval_of(m, "pooled", k)) for k in KEYS])
    Console().print(table)
    if intervals_note(m):
        err.print(intervals_note(m), markup=False, highlight=False)
    err.print(f"done in {m['seconds']} s")
    print(Path(cfg.out) / "eval" / "metrics.json")
