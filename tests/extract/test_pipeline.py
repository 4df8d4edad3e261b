"""The overlapped extraction pipeline: writer threads change nothing, half-precision overflow is recomputed
in float32 (or reported, never written), the store is keyed by the files it holds, Ctrl-C keeps shards."""
from __future__ import annotations

import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
import zarr

from hairdiff.cache import FeatureStore
from hairdiff.core.errors import BadInputStop
from hairdiff.demo.hairlike import make_hairlike_dataset
from hairdiff.extract.config import ExtractConfig
from hairdiff.extract.runner import ExtractStats, build_extractor, extract_shards, list_refs, open_store
from hairdiff.extract.sources import data_key
from tests.fixtures.cli import popen_pipeline, run_pipeline


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_hairlike_dataset(tmp_path_factory.mktemp("data") / "d", n=10, size=64, seed=7)


def args(root, *extra):
    return ["extract", "--dataset", "folder", "--root", root, "--model", "tiny", "--resolution", "64",
            "--shard-size", "4", "--batch-size", "3", "--workers", "0", *extra]


def arrays(url) -> dict:
    g = zarr.open_group(url, mode="r")
    out = {n: a[:] for n, a in g.arrays() if n != "labels"}
    out |= {f"features/{n}": a[:] for n, a in g["features"].arrays()}
    out["labels"] = [bytes(b) for b in g["labels"][:]]
    return out


def test_writer_threads_write_the_same_store_as_one_writer(data, tmp_path):
    one = run_pipeline(*args(data, "--writers", "1"), cache_root=tmp_path / "a").stdout.split()[-1]
    three = run_pipeline(*args(data, "--writers", "3", "--workers", "2"), cache_root=tmp_path / "b").stdout.split()[-1]
    a, b = arrays(one), arrays(three)
    assert a.keys() == b.keys() and a["done"].all()
    for k in a:
        assert a[k] == b[k] if k == "labels" else np.array_equal(a[k], b[k]), k
    # ... and what the backbone computes for these images, batch by batch (3 per batch, as extracted)
    cfg = ExtractConfig(dataset="folder", root=str(data), model="tiny", resolution=64, device="cpu", workers=0)
    fx = build_extractor(cfg)
    reader, refs = list_refs(cfg)
    from hairdiff.cache.geometry import letterbox_image
    from hairdiff.extract.loading import to_model_input

    images = [letterbox_image(reader.load(r).image, 64) for r in refs[:3]]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the CLI ran (CPU results depend on the thread count at float rounding)
    try:
        want = fx(to_model_input(images, torch.device("cpu"), torch.float32))
    finally:
        torch.set_num_threads(threads)
    for name, f in want.items():
        key = "features/" + name.replace(".", "_")
        assert np.array_equal(a[key][:3], f.to(torch.float16).numpy()), name


def _half_precision_run(data, tmp_path, hook_target: str, on_error="stop", blowup=float("inf")):
    """Extract with a float16 tiny model whose `hook_target` output is non-finite for sample 0 in float16
    only: the way the SD VAE overflows on some inputs, forced."""
    cfg = ExtractConfig(dataset="folder", root=str(data), model="tiny", resolution=64, device="cpu", dtype="float16",
                        batch_size=4, shard_size=4, workers=0, limit=4, on_error=on_error,
                        cache_root=str(tmp_path / "c"))
    fx = build_extractor(cfg)
    module = (fx.bb.vae if hook_target.startswith("vae") else fx.bb.unet).get_submodule(hook_target.split(".", 1)[1])

    def overflow(m, args, out):
        bad = out.clone()
        if bad.dtype == torch.float16 or blowup != float("inf"):
            bad[0] = blowup
        return bad

    module.register_forward_hook(overflow)
    reader, refs = list_refs(cfg)
    store = open_store(cfg, fx, refs, data_key(refs))
    stats = ExtractStats(store=store.url)
    extract_shards(cfg, reader, refs, fx, store, np.arange(4), stats=stats, log=lambda *a: None)
    return stats, store, fx, reader, refs


@pytest.mark.parametrize("target,expect", [("vae.encoder.down_blocks.0", {"vae_fp32": 1, "full_fp32": 0}),
                                           ("unet.up_blocks.0", {"vae_fp32": 1, "full_fp32": 1})])
def test_non_finite_half_precision_output_is_recomputed_in_float32(data, tmp_path, target, expect):
    stats, store, fx, reader, refs = _half_precision_run(data, tmp_path, target)
    assert stats.recomputed == expect and stats.computed == 4 and not stats.skipped
    s = FeatureStore.open(store.url)
    feats = s.read_batch([0, 1, 2, 3])["features"]
    assert all(np.isfinite(v.astype(np.float32)).all() for v in feats.values())
    from hairdiff.cache.geometry import letterbox_image
    from hairdiff.extract.loading import to_model_input

    x = to_model_input([letterbox_image(reader.load(refs[0]).image, 64)], torch.device("cpu"), torch.float32)
    again = fx.recompute_fp32(x, full=expect["full_fp32"] > 0)
    for name, f in again.items():
        assert np.array_equal(feats[name][0], f[0].to(torch.float16).numpy()), name


def test_values_beyond_float16_are_reported_never_written(data, tmp_path):
    with pytest.raises(BadInputStop, match="beyond float16"):
        _half_precision_run(data, tmp_path / "stop", "unet.up_blocks.0", blowup=1e6)
    stats, store, *_ = _half_precision_run(data, tmp_path / "skip", "unet.up_blocks.0", on_error="skip",
                                           blowup=1e6)
    assert [s["index"] for s in stats.skipped] == [0] and "65504" in stats.skipped[0]["reason"]
    assert FeatureStore.open(store.url).done_mask()[:4].tolist() == [False, True, True, True]


def test_store_is_keyed_by_the_files_it_holds(data, tmp_path):
    first = run_pipeline(*args(data, "--limit", "4"), cache_root=tmp_path / "c").stdout.split()[-1]
    copy = shutil.copytree(data, tmp_path / "copy")  # the same files elsewhere: the same store
    p = run_pipeline(*args(copy, "--limit", "4"), cache_root=tmp_path / "c")
    assert p.stdout.split()[-1] == first and "computed 0" in p.stderr
    other = make_hairlike_dataset(tmp_path / "other", n=10, size=64, seed=8)  # same ids, other pictures
    p = run_pipeline(*args(other, "--limit", "4"), cache_root=tmp_path / "c")
    second = p.stdout.split()[-1]
    assert second != first and "computed 4" in p.stderr
    a, b = arrays(first), arrays(second)
    assert not np.array_equal(a["masks"][:4], b["masks"][:4])


def test_ctrl_c_keeps_written_shards_and_says_how_to_continue(tmp_path):
    data = make_hairlike_dataset(tmp_path / "d", n=48, size=128, seed=2)
    a = ["extract", "--dataset", "folder", "--root", data, "--model", "tiny", "--resolution", "128",
         "--shard-size", "4", "--batch-size", "4", "--workers", "0", "--writers", "1"]
    proc = popen_pipeline(*a, cache_root=tmp_path / "c", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "c").rglob("done/c/1")):
        time.sleep(0.2)  # until the second shard's flags are written
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert "interrupted" in last and "kept" in last and "same command" in last, last
    store = next((tmp_path / "c").rglob("*.zarr"))
    kept = int(zarr.open_group(str(store), mode="r")["done"][:].sum())
    assert 4 <= kept < 48
    p = run_pipeline(*a, cache_root=tmp_path / "c")
    assert f"computed {48 - kept}," in p.stderr


@pytest.fixture()
def tmpfs(tmp_path):
    """A small filesystem of our own, which can be made read-only (root alone bypasses file modes)."""
    where = tmp_path / "fs"
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(where)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs privileges this machine does not give")
    yield where
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_read_only_cache_root_is_one_line_before_loading(data, tmpfs):
    first = run_pipeline(*args(data, "--limit", "4"), cache_root=tmpfs / "c").stdout.strip().splitlines()[-1]
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    # its complete store is served as it is: nothing to write
    again = run_pipeline(*args(data, "--limit", "4"), cache_root=tmpfs / "c")
    assert again.stdout.strip().splitlines()[-1] == first and "computed 0, reused 4" in again.stderr
    # a store that needs more samples on a filesystem gone read-only: refused before the model loads (issue 26)
    p = run_pipeline(*args(data), cache_root=tmpfs / "c", check=False)
    assert p.returncode == 2 and "loading model" not in p.stderr and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert p.stderr.strip().splitlines() == [
        f"error: cannot write to the cache root {tmpfs / 'c'} (Read-only file system) and it holds no complete store "
        f"of these images to reuse (in {tmpfs / 'c' / 'folder' / 'all'}): pass --cache-root to a writable folder or "
        "set HAIRDIFF_CACHE"]
    # a new cache root there: refused before the model loads, nothing created
    p = run_pipeline(*args(data), cache_root=tmpfs / "new", check=False)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        f"error: cannot write to the cache root {tmpfs / 'new'} (Read-only file system): pass --cache-root to a "
        f"writable folder or set HAIRDIFF_CACHE"]
