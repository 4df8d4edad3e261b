"""Fault injection on the extraction path: bad files, bit flips, concurrent writers, OOM, a full disk."""
from __future__ import annotations

import json
import resource
import signal
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from hairdiff.demo.hairlike import make_hairlike_dataset
from tests.fixtures.cli import popen_pipeline, run_pipeline


def run(args, cache_root, check=True, preexec=None):
    return run_pipeline(*args, cache_root=cache_root, check=check, preexec=preexec)


def extract_args(root, *extra):
    return ["extract", "--dataset", "folder", "--root", root, "--split", "all", "--model", "tiny", "--resolution",
            "64", "--shard-size", "2", "--batch-size", "2", "--workers", "0", *extra]


@pytest.fixture()
def data(tmp_path):
    return make_hairlike_dataset(tmp_path / "data", n=8, size=64, seed=3)


def features(store):
    g = zarr.open_group(store, mode="r")
    return {n: a[:] for n, a in g["features"].arrays()} | {"done": g["done"][:], "masks": g["masks"][:]}


def test_bad_file_stops_then_skip_goes_on_and_reports(data, tmp_path):
    bad = data / "images" / "hair0003.png"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated PNG
    p = run(extract_args(data), tmp_path / "c", check=False)
    assert p.returncode == 1
    assert "hair0003.png" in p.stderr and "Fix:" in p.stderr and "Traceback" not in p.stderr
    store = next((tmp_path / "c" / "folder" / "all").glob("*.zarr"))
    done = zarr.open_group(store, mode="r")["done"][:]
    assert done[:2].all() and not done[3]  # the shard before the bad file is kept
    p = run(extract_args(data, "--on-error", "skip"), tmp_path / "c")
    assert "skipped" in p.stderr and "hair0003.png" in p.stderr
    report = next(line.split("report: ", 1)[1] for line in p.stderr.splitlines() if line.startswith("report: "))
    skipped = json.loads(Path(report).read_text())["skipped"]
    assert [s["id"] for s in skipped] == ["hair0003"]
    done = zarr.open_group(store, mode="r")["done"][:]
    assert done.sum() == 7 and not done[3]


def test_verify_names_flipped_and_deleted_shards(data, tmp_path):
    store = run(extract_args(data), tmp_path / "c").stdout.split()[-1]
    assert run(["cache", "verify", store], tmp_path / "c").returncode == 0
    level = sorted((Path(store) / "features").iterdir())[0]
    shard0 = level / "c" / "0" / "0" / "0" / "0"
    raw = bytearray(shard0.read_bytes())
    raw[len(raw) // 3] ^= 0xFF
    shard0.write_bytes(bytes(raw))
    (level / "c" / "2" / "0" / "0" / "0").unlink()
    p = run(["cache", "verify", store, "--json"], tmp_path / "c", check=False)
    assert p.returncode == 1
    report = json.loads(p.stdout)
    bad = {r["id"] for r in report["corrupt"]}
    assert {"hair0004", "hair0005"} <= bad  # deleted shard 2
    assert bad & {"hair0000", "hair0001"}  # flipped bits in shard 0


def test_two_concurrent_extractors_fill_one_store_exactly_once(data, tmp_path):
    ref = run(extract_args(data), tmp_path / "ref").stdout.split()[-1]
    run(extract_args(data, "--limit", "2"), tmp_path / "c")  # model + store + shard 0, in the same batches as ref
    procs = [popen_pipeline(*extract_args(data), cache_root=tmp_path / "c", stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    store = outs[0][0].split()[-1]
    a, b = features(ref), features(store)
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def test_out_of_memory_halves_the_batch_and_loses_nothing():
    from types import SimpleNamespace

    from hairdiff.extract.compute import ComputeStage
    from hairdiff.extract.timing import StageClock

    class Flaky:
        """A real computation that fails like CUDA does when the batch is too large for the device."""
        bb, timer = SimpleNamespace(dtype=torch.float32), None

        def __call__(self, x):
            if x.shape[0] > 2:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return {"f": x.float().mean(1, keepdim=True)}

    images = torch.from_numpy(np.stack([np.full((8, 8, 3), i * 20, np.uint8) for i in range(7)]))
    dests = [{"f": torch.full((1, 8, 8), float("nan"), dtype=torch.float16)} for _ in range(7)]
    stage = ComputeStage(Flaky(), torch.device("cpu"), 8, StageClock("cpu"))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        failures = stage.finish(stage.launch(images, dests))
    assert stage.micro == 2 and not failures and any("out of memory" in str(x.message) for x in w)
    out = torch.stack([d["f"] for d in dests]).float().numpy()
    expected = np.stack([np.full((1, 8, 8), i * 20 / 127.5 - 1, np.float32) for i in range(7)])
    np.testing.assert_allclose(out, expected, atol=1e-3)


def _limit_file_size():
    # A real write failure from the kernel (EFBIG) in place of a full disk, without needing a small filesystem.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))


def test_disk_full_during_write_leaves_a_consistent_store_that_resumes(data, tmp_path):
    ref = run(extract_args(data), tmp_path / "ref").stdout.split()[-1]
    run(extract_args(data, "--limit", "2"), tmp_path / "c")  # model and store exist before the limit applies
    p = run(extract_args(data), tmp_path / "c", check=False, preexec=_limit_file_size)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert "consistent" in p.stderr and "run the same command again" in p.stderr
    store = next((tmp_path / "c" / "folder" / "all").glob("*.zarr"))
    check = run(["cache", "verify", store], tmp_path / "c", check=False)  # consistent: partial, nothing corrupt
    assert check.returncode == 0 and ", 0 corrupt" in check.stdout, check.stdout
    assert run(["cache", "verify", store, "--complete"], tmp_path / "c", check=False).returncode == 1
    resumed = run(extract_args(data), tmp_path / "c").stdout.split()[-1]
    a, b = features(ref), features(resumed)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
