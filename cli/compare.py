"""`pipeline compare`: differences between evaluations of the same test images, with paired 95% intervals."""
from __future__ import annotations

from pathlib import Path

from rich.table import Table

from hairdiff.cli.progress import err
from hairdiff.evaluate.config import CompareConfig


def compare(cfg: CompareConfig) -> None:
    """Compare evaluations of the same test images: is X better than A, or can these images not tell?

    The first evaluation is the reference A; for each other X, every metric (pooled and per-image mean) is
    given as X - A with its 95% interval from a paired bootstrap over the test images (the same images drawn
    for both). Refuses, in one line, evaluations of different images or at different annotation resolutions.
    An evaluation is a `pipeline eval` --out folder, its metrics.json, or a folder holding exactly one (a run
    folder with its eval inside, a reproduce --out, a sweep point). Writes compare.json and compare.md.
    Example:

        pipeline compare runs/a/eval runs/b/eval --out compare/a-vs-b
    """
    from hairdiff.cache.distinct import check_distinct
    from hairdiff.core.files import atomic_write, atomic_write_json
    from hairdiff.core.paths import check_output_dir
    from hairdiff.evaluate.compare import cell, compare, markdown, shown
    from hairdiff.evaluate.report import RANDOM_WEIGHTS, fmt

    check_output_dir(cfg.out, "--out")
    check_distinct(outputs={"--out": cfg.out})
    report = compare(cfg.evaluations, resamples=cfg.resamples, seed=cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "compare.json", report, indent=2)
    atomic_write(out / "compare.md", markdown(report))
    for c in report["comparisons"]:
        t = Table(title=f"X = {c['evaluation']} against A = {report['reference']} ({c['images']} images)"
                  + (f" ({RANDOM_WEIGHTS})" if report["random_weights"] else ""))
        for col in ("reading", "metric", "A", "X", "X - A [95% interval]"):
            t.add_column(col)
        for reading, label in (("pooled", "pooled"), ("per_image_mean", "per-image mean")):
            for key in shown(reading):
                d = c[reading].get(key)
                if d is not None:
                    t.add_row(label, key, fmt(d["reference"]), fmt(d["value"]), cell(d))
        err.print(t)
    print(out / "compare.json")
