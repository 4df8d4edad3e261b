"""`pipeline extract` run as a user runs it: a subprocess, real data, the tiny model, a real Zarr store."""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from tests.fixtures.cli import popen_pipeline
from tests.fixtures.cli import run_pipeline as run_cli


def figaro_args(root, *extra):
    return ["extract", "--dataset", "figaro", "--root", root, "--split", "Training", "--model", "tiny",
            "--resolution", "64", "--shard-size", "4", "--workers", "0", "--batch-size", "4", *extra]


def arrays(store: str) -> dict[str, np.ndarray]:
    g = zarr.open_group(store, mode="r")
    out = {}
    for name, arr in g.arrays():
        out[name] = arr[:]
    for name, grp in g.groups():
        for sub, arr in grp.arrays():
            out[f"{name}/{sub}"] = arr[:]
    return out


def test_extract_writes_store_that_plain_zarr_reads(figaro_root, tmp_path):
    p = run_cli(*figaro_args(figaro_root, "--limit", "8"), cache_root=tmp_path)
    store = p.stdout.strip().splitlines()[-1]
    assert store.endswith(".zarr") and Path(store).is_dir()
    g = zarr.open_group(store, mode="r")
    feats = g["features"]
    levels = list(feats.arrays())
    assert len(levels) == 4  # the 'unet' tap set: four decoder levels
    for _, arr in levels:
        assert arr.ndim == 4 and arr.dtype == np.float16 and arr.shape[0] == 748
        assert np.isfinite(arr[:8]).all() and np.abs(arr[:8]).sum() > 0
    # the same command again reuses the store and computes nothing
    t = time.perf_counter()
    again = run_cli(*figaro_args(figaro_root, "--limit", "8"), cache_root=tmp_path)
    assert again.stdout.strip().splitlines()[-1] == store
    assert "computed 0" in again.stderr, again.stderr
    assert time.perf_counter() - t < 120


def test_prompt_and_timestep_change_the_store(figaro_root, tmp_path):
    base = run_cli(*figaro_args(figaro_root, "--limit", "1"), cache_root=tmp_path).stdout.split()[-1]
    other_prompt = run_cli(*figaro_args(figaro_root, "--limit", "1", "--prompt", "A photo of a cat."),
                           cache_root=tmp_path).stdout.split()[-1]
    other_t = run_cli(*figaro_args(figaro_root, "--limit", "1", "--timestep", "100"),
                      cache_root=tmp_path).stdout.split()[-1]
    assert len({base, other_prompt, other_t}) == 3
    a, b = arrays(base), arrays(other_prompt)
    key = next(k for k in a if k.startswith("features/") and a[k].ndim == 4)
    assert not np.array_equal(a[key][:1], b[key][:1])


def _kill_when(proc, ready, timeout: float = 120.0) -> None:
    """SIGKILL `proc` as soon as ready() holds (polled), as a pre-empted job dies: no handler runs."""
    t0 = time.monotonic()
    while not ready() and proc.poll() is None and time.monotonic() - t0 < timeout:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_kill_during_extraction_then_resume_gives_identical_store(figaro_root, tmp_path):
    args = figaro_args(figaro_root, "--limit", "12", "--batch-size", "1")
    ref = run_cli(*args, cache_root=tmp_path / "ref").stdout.split()[-1]
    killed = tmp_path / "killed"

    def shards() -> list[Path]:  # the feature shards written so far (features/<level>/c/<k>/0/0/0)
        return [p for level in killed.glob("*/*/*.zarr/features/*") for p in (level / "c").rglob("*") if p.is_file()]

    # Two moments, found by what is on disk rather than guessed with sleeps: once the store exists (its
    # metadata written, no shard yet), and once its first shard is written (the others being computed).
    for ready in (lambda: any(killed.rglob("*.zarr/zarr.json")), lambda: bool(shards())):
        proc = popen_pipeline(*args, cache_root=killed, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _kill_when(proc, ready)
    store = next(killed.rglob("*.zarr"))
    assert zarr.open_group(store, mode="r")["done"][:12].sum() < 12  # killed part-way, not after the end
    resumed = run_cli(*args, cache_root=killed).stdout.split()[-1]
    a, b = arrays(ref), arrays(resumed)
    assert a.keys() == b.keys()
    for k in a:
        if k == "done" or k.startswith("features/") or k in ("masks", "orig_sizes", "ids"):
            assert np.array_equal(a[k], b[k]), k


def test_missing_model_root_and_split_are_one_clear_line(figaro_root, tmp_path):
    p = run_cli("extract", "--dataset", "figaro", "--root", figaro_root, "--split", "Training",
                "--model", str(tmp_path / "no-such-model"), "--limit", "1", cache_root=tmp_path, check=False)
    assert p.returncode != 0
    last = p.stderr.strip().splitlines()[-1]
    assert "--model" in last and "Traceback" not in p.stderr
    p = run_cli("extract", "--dataset", "figaro", "--root", tmp_path / "nowhere", "--split", "Training",
                "--model", "tiny", cache_root=tmp_path, check=False)
    assert p.returncode != 0 and "nowhere" in p.stderr and "Traceback" not in p.stderr
    p = run_cli("extract", "--dataset", "figaro", "--root", figaro_root, "--split", "Validation",
                "--model", "tiny", cache_root=tmp_path, check=False)
    assert p.returncode != 0 and "Validation" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.slow
def test_dask_local_cluster_equals_single_process(figaro_root, tmp_path):
    args = figaro_args(figaro_root, "--limit", "12")
    single = run_cli(*args, cache_root=tmp_path / "one").stdout.split()[-1]
    multi = run_cli(*args, "--scheduler", "local:2", cache_root=tmp_path / "dask").stdout.split()[-1]
    a, b = arrays(single), arrays(multi)
    assert np.array_equal(a["done"], b["done"])
    for k in a:
        if k.startswith("features/") and a[k].ndim == 4:
            np.testing.assert_allclose(a[k][:12].astype(np.float32), b[k][:12].astype(np.float32),
                                       rtol=1e-3, atol=1e-3)
