"""bench/bootstrap_speed.py runs (tiny sizes) and reports a row per size and kind."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.fixtures import REPO


def test_bootstrap_speed_reports_every_size(tmp_path):
    p = subprocess.run([sys.executable, str(REPO / "bench" / "bootstrap_speed.py"), "--images", "20,50",
                        "--resamples", "300", "--repeats", "1", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = json.loads((tmp_path / "bootstrap_speed.json").read_text())["rows"]
    assert [(r["kind"], r["images"]) for r in rows] == [("intervals", 20), ("paired (compare)", 20),
                                                        ("intervals", 50), ("paired (compare)", 50)]
    assert all(r["resamples"] == 300 and 0 < r["cpu_s"] for r in rows)
