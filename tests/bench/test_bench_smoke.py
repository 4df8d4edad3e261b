"""The benchmark scripts run (tiny sizes), so they cannot rot between benchmark runs."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from hairdiff.cache import FeatureStore, LevelSpec
from tests.fixtures import REPO



def test_cache_codecs_runs_and_reports_every_option(tmp_path):
    levels = [LevelSpec("unet.up_blocks.0", 32, 8, 2, 2), LevelSpec("unet.up_blocks.3", 8, 4, 8, 8)]
    store = FeatureStore.create_or_open(
        str(tmp_path / "s.zarr"), fingerprint="f" * 64, fingerprint_inputs={"taps": [lv.name for lv in levels]},
        dataset="folder", split="all", root="/x", ids=["a", "b"], levels=levels, resolution=64, preprocessing={},
        shard_size=2)
    rng = np.random.default_rng(0)
    feats = {lv.name: rng.standard_normal((2, lv.channels, lv.height, lv.width)).astype(np.float16) for lv in levels}
    store.write_samples([0, 1], feats, np.zeros((2, 64, 64), np.uint8), [np.zeros((4, 4), np.uint8)] * 2,
                        [[64, 64], [64, 64]])
    p = subprocess.run([sys.executable, str(REPO / "bench" / "cache_codecs.py"), "--store", str(tmp_path / "s.zarr"),
                        "--samples", "2", "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    rows = json.loads((tmp_path / "cache_codecs.json").read_text())["rows"]
    assert {r["precision"] for r in rows} == {"fp16", "bf16", "int8"}
    fp16_none = next(r for r in rows if r["precision"] == "fp16" and r["codec"] == "none")
    assert fp16_none["max_error_rel_to_level_max"] == 0 and abs(fp16_none["ratio_vs_fp16_raw"] - 1) < 1e-9
