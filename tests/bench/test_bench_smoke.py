"""The benchmark scripts run (tiny sizes), so they cannot rot between benchmark runs."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from hairdiff.cache import FeatureStore, LevelSpec
from tests.fixtures import REPO
from tests.fixtures.cli import cli_env


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
    assert {r["store"] for r in rows if r["precision"] == "fp16"} >= {"--codec lz4 (default)", "--codec zstd"}
    fp16_none = next(r for r in rows if r["precision"] == "fp16" and r["codec"] == "none")
    assert fp16_none["max_error_rel_to_level_max"] == 0 and abs(fp16_none["ratio_vs_fp16_raw"] - 1) < 1e-9


def _bench(script: str, *args, tmp_path) -> dict:
    """The script's JSON, with `wall_s`: the seconds the whole script took, measured here (a reference for the
    rates it reports, which it cannot have computed from more time than it ran). Its scratch folders
    (tempfile) land in a short folder removed afterwards: a TMPDIR as deep as tmp_path cannot hold the decode
    workers' sockets before Python 3.13."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-") as work:
        p = subprocess.run([sys.executable, str(REPO / "bench" / script), *map(str, args), "--out", str(tmp_path)],
                           capture_output=True, text=True, timeout=600, env=cli_env(tmp_path / "cache", TMPDIR=work))
    wall = time.perf_counter() - t0
    assert p.returncode == 0, p.stderr[-3000:]
    return {**json.loads((tmp_path / script.replace(".py", ".json")).read_text()), "wall_s": wall}


def test_extract_speed_reports_stages_ceiling_and_naive(tmp_path):
    res = _bench("extract_speed.py", "--model", "tiny", "--resolution", "64", "--images", "8", "--naive-images", "2",
                 "--workers", "0", "--batch-size", "4", tmp_path=tmp_path)
    s = res["summary"]
    assert s["images"] == 8 and s["images_per_s"] > 0 and s["batch_used"] == 4
    assert s["images"] / s["images_per_s"] < res["wall_s"]  # the rate is of work done inside the script's run
    assert {"decode", "h2d", "vae", "unet", "d2h", "compress", "write", "store"} <= set(s["stage_seconds"])
    assert s["stage_seconds"]["compress"] > 0 and s["stage_seconds"]["write"] > 0
    assert s["flops_per_image"]["total"] > 0 and 0 < s["ceiling_fraction"] and s["speedup_vs_naive"] > 0
    for row in res["rows"]:
        assert row["device"] and row["torch"] and row["command"].startswith("python")


def test_host_pipeline_says_the_cores_needed_per_codec_and_the_readers_rate(tmp_path):
    res = _bench("host_pipeline.py", "--seconds", "0.1", "--resolution", "64", "--threads", "1,2", "--repeats", "1",
                 tmp_path=tmp_path)
    stages = {r["stage"] for r in res["rows"]}
    assert stages == {"decode+letterbox", "compress+write", "train reader"}
    writes = [r for r in res["rows"] if r["stage"] == "compress+write"]
    assert {(r["tap_set"], r["precision"], r["codec"], r["path"]) for r in writes} == {
        (t, p, c, "pieces") for t in ("unet", "odise") for p in ("fp16", "int8") for c in ("lz4", "zstd")} | {
        ("unet", "fp16", "zstd", "zarr set (before)")}
    assert all(r["images_per_s"] > 0 and r["cores_for_ceiling"] > 0 for r in writes)
    assert all(r["x_vs_raw"] > 1 for r in writes if r["precision"] == "fp16")  # tiny-model features compress
    reads = [r for r in res["rows"] if r["stage"] == "train reader"]
    assert {(r["codec"], r["path"], r["threads"]) for r in reads} == {
        (c, p, t) for c in ("lz4", "zstd") for p in ("shard reads", "zarr (before)") for t in (1, 2)}
    s = res["summary"]
    assert s["default_codec"] == "lz4" and set(s["cores_for_ceiling"]) == {"lz4", "zstd"}
    assert s["before"]["cores_for_ceiling_cpu"] > 0
    assert set(s["reader_projection"]) == {"shard reads, lz4", "shard reads, zstd"}
    assert all(0 <= p["gil_share"] <= 1 and p["amdahl_images_per_s_8_cores"] > 0
               for p in s["reader_projection"].values())


def test_train_speed_compares_cached_and_online(tmp_path):
    res = _bench("train_speed.py", "--model", "tiny", "--resolution", "64", "--images", "8", "--iters", "5",
                 "--batch-size", "2", tmp_path=tmp_path)
    s = res["summary"]
    assert (s["iters_timed"], s["batch_size"]) == (2, 2)  # 5 iterations, the first 3 untimed
    # Seconds the timed steps took by each rate: both runs happened inside the script's wall time (measured
    # here), so neither rate is inflated (a wrong unit, a step counted as an image, ...), and the speed-up is
    # the ratio of those durations.
    images = s["iters_timed"] * s["batch_size"]
    cached_s, online_s = images / s["cached_images_per_s"], images / s["online_images_per_s"]
    assert 0 < cached_s + online_s < res["wall_s"], (cached_s, online_s, res["wall_s"])
    assert s["train_speedup_vs_online"] == pytest.approx(online_s / cached_s)
    rows = {r["run"]: r for r in res["rows"]}
    assert rows["from the cache (pipeline train's reader)"]["images_per_s"] == s["cached_images_per_s"]
    assert rows["backbone online in the step"]["images_per_s"] == s["online_images_per_s"]
    f = s["flops_per_image"]
    assert f["backbone_forward"] > 0 and f["head_train_step"] > 0
    assert s["flop_bound_limit"] == (f["backbone_forward"] + f["head_train_step"]) / f["head_train_step"]
    assert s["fraction_of_limit"] == s["train_speedup_vs_online"] / s["flop_bound_limit"]
    assert 0 <= s["loader_wait_fraction"] <= 1
