"""`pipeline reproduce` as a user runs it on the shared Figaro data: every step, the report, and a rerun."""
from __future__ import annotations

import json

from tests.fixtures.cli import run_pipeline


def test_reproduce_figaro_smoke_writes_the_report_and_resumes(figaro_root, tmp_path):
    args = ["reproduce", "--dataset", "figaro", "--root", figaro_root, "--model", "tiny", "--limit", "16",
            "--iters", "4", "--out", tmp_path / "r"]
    p = run_pipeline(*args, cache_root=tmp_path / "cache", timeout=600)
    assert p.stdout.strip().splitlines()[-1] == str(tmp_path / "r" / "report.md")
    assert '"views": "flip"' in p.stderr  # the recipe is printed first
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["random_weights"] and report["train"]["iterations"] == 4
    assert 0 < report["metrics"]["mIoU"] < 100 and report["metrics"]["images"] == 3  # 20% of 16 held out
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| **hairdiff (this run)**" in md and "| 95.40 |" in md and "say nothing about the method" in md
    assert "held out as the test split" in md  # the shared copy has no Testing split: said, not hidden
    assert list((tmp_path / "r" / "eval" / "overlays").glob("best_*.png"))
    again = run_pipeline(*args, cache_root=tmp_path / "cache", timeout=600)
    assert "computed 0" in again.stderr and "nothing to do" in again.stderr  # every step resumed
    assert json.loads((tmp_path / "r" / "report.json").read_text())["metrics"] == report["metrics"]
