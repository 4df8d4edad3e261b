"""`pipeline reproduce`: the paper's experiment for one dataset; the report's path as the last line."""
from __future__ import annotations

from pathlib import Path

from hairdiff.cli.progress import err, rich_progress
from hairdiff.evaluate.reproduce import ReproduceConfig


def reproduce(cfg: ReproduceConfig) -> None:
    """Extract the paper's training and test splits, train with the paper's recipe, score, and report.

    Writes OUT/report.md and OUT/report.json (our row beside the paper's), OUT/eval/ (metrics, overlays)
    and OUT/run/. Running the same command again resumes where it stopped. With --model tiny --limit N it is
    a CPU smoke run of every step. The recipe (evaluate/recipes.py) is printed first.
    """
    from hairdiff.evaluate.reproduce import reproduce as run

    rep = run(cfg, progress=rich_progress, log=err.print)
    m = rep["metrics"]
    err.print(f"{rep['dataset']}: mIoU {m['mIoU']:.2f}, accuracy {m['accuracy']:.2f}, precision "
              f"{m['precision']:.2f}, F1 {m['f1']:.2f} on {m['images']} test images ({rep['seconds']} s)")
    print(Path(cfg.out) / "report.md")
