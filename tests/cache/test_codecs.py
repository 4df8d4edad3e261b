"""The features' codec: lz4 by default, zstd on request, a store setting outside the fingerprint; stores
written before the choice (zstd, no `codec` attribute) open, verify, train, evaluate and take writes as before."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from numcodecs.blosc import cbuffer_complib

import hairdiff.cache.store as store_module
from hairdiff.cache import FeatureStore
from hairdiff.cache.verify import verify
from hairdiff.core.errors import UsageError
from hairdiff.extract.config import ExtractConfig
from tests.fixtures.cli import invoke
from tests.fixtures.stores import TINY, log_rows, make_train_store


def first_chunk_codecs(url: str) -> set[str]:
    """Blosc's inner compressor of the first chunk in each feature shard file on disk: what was written."""
    out = set()
    for f in Path(url, "features").rglob("c/*/0/0/0"):
        raw = f.read_bytes()
        n = 4 * 16 + 4  # shard_size 4: the index, (offset, length) pairs + crc32c, at the end
        offset, length = np.frombuffer(raw[-n:-4], "<u8").reshape(-1, 2)[0]
        out.add(cbuffer_complib(raw[offset:offset + length - 4]))
    return out


def old_store(tmp: Path, monkeypatch, name: str = "old") -> str:
    """A store as the code before the codec choice wrote it: zstd-3 bit-shuffle features, no `codec` attr."""
    with monkeypatch.context() as m:
        m.setattr(store_module, "DEFAULT_CODEC", "zstd")
        url = make_train_store(tmp, name=name, n=8)
    g = zarr.open_group(url, mode="r+")
    del g.attrs["codec"]
    blosc = g[f"features/{FeatureStore.open(url).levels[0].key}"].metadata.codecs[0].codecs[1]
    assert (blosc.cname.value, blosc.clevel, blosc.shuffle.value) == ("zstd", 3, "bitshuffle")
    return url


def test_new_stores_are_lz4_and_plain_zarr_reads_them(tmp_path):
    url = make_train_store(tmp_path, name="new", n=8)
    s = FeatureStore.open(url)
    assert s.codec == "lz4" and s.attrs["codec"] == "lz4" and s.info()["codec"] == "lz4"
    assert first_chunk_codecs(url) == {"LZ4"}
    g = zarr.open_group(url, mode="r")  # no hairdiff needed to read it
    b = s.read_batch([6, 1])
    for lv in s.levels:
        assert np.array_equal(g[f"features/{lv.key}"][[6, 1]], b["features"][lv.name])
    assert np.array_equal(g["masks"][[6, 1]], b["masks"])


def test_a_store_from_before_the_codec_choice_trains_and_evaluates_as_a_new_one(tmp_path, monkeypatch):
    old, new = old_store(tmp_path, monkeypatch), make_train_store(tmp_path, name="new", n=8)  # the same content
    assert first_chunk_codecs(old) == {"Zstd"} and first_chunk_codecs(new) == {"LZ4"}
    s = FeatureStore.open(old)
    assert s.codec == "zstd" and "codec" not in s.attrs and s.fingerprint == FeatureStore.open(new).fingerprint
    code, out, _ = invoke("cache", "info", old)
    assert code == 0 and "codec: zstd" in out.splitlines()
    assert verify(s)["ok"] and verify(s)["done"] == 8
    head = [f"--head={k}={v}" for k, v in TINY.items()]
    metrics = {}
    for name, url in (("old", old), ("new", new)):
        run, ev = tmp_path / f"run-{name}", tmp_path / f"eval-{name}"
        code, _, err = invoke("train", "--cache", url, "--out", run, "--iters", "3", "--batch-size", "4",
                              "--device", "cpu", "--no-progress", "--no-small", *head)
        assert code == 0, err
        code, _, err = invoke("eval", "--run", run, "--cache", url, "--out", ev, "--device", "cpu")
        assert code == 0, err
        metrics[name] = ([r["loss"] for r in log_rows(run)], json.loads((ev / "metrics.json").read_text()))
    assert metrics["old"][0] == metrics["new"][0]  # the same features, bit for bit: the same losses
    keys = ("mIoU", "accuracy", "precision", "f1")
    assert [metrics["old"][1][k] for k in keys] == [metrics["new"][1][k] for k in keys]


def test_writes_into_a_store_follow_its_own_codec(tmp_path, monkeypatch):
    url = old_store(tmp_path, monkeypatch)
    s = FeatureStore.open(url, mode="r+")
    before = s.read_batch([0, 1, 2])
    feats = {lv.name: before["features"][lv.name][:2] for lv in s.levels}
    s.write_samples([1, 0], feats, before["masks"][:2], [np.zeros((32, 32), np.uint8)] * 2, [[32, 32]] * 2)
    assert first_chunk_codecs(url) == {"Zstd"}  # never mixed with the default
    after = FeatureStore.open(url).read_batch([1, 0, 2])
    for lv in s.levels:
        assert np.array_equal(after["features"][lv.name], before["features"][lv.name][[0, 1, 2]])


def test_codec_option_is_checked_before_anything_loads():
    assert ExtractConfig(dataset="folder", root="x", codec="zstd").codec == "zstd"
    with pytest.raises(UsageError) as e:
        ExtractConfig(dataset="folder", root="x", codec="gzip")
    assert "--codec 'gzip'" in str(e.value) and "lz4" in str(e.value) and "\n" not in str(e.value)
    code, _, err = invoke("extract", "--dataset", "folder", "--root", "/nowhere", "--codec", "gzip")
    assert code == 2 and "--codec 'gzip'" in err and "Traceback" not in err


def test_codec_is_outside_the_fingerprint_and_an_existing_store_keeps_its_own(figaro_root, tmp_path, monkeypatch):
    args = ["extract", "--dataset", "figaro", "--root", figaro_root, "--split", "Training", "--model", "tiny",
            "--resolution", "64", "--shard-size", "4", "--workers", "0", "--batch-size", "4", "--limit", "4"]

    def extract(root, *extra) -> tuple[str, str]:
        monkeypatch.setenv("HAIRDIFF_CACHE", str(tmp_path / root))
        code, out, err = invoke(*args, *extra)
        assert code == 0, err
        return out.split()[-1], err

    a, _ = extract("a")
    assert FeatureStore.open(a).codec == "lz4"
    again, err = extract("a", "--codec", "zstd", "--limit", "6")
    assert again == a  # the same store: the codec is not what the features are
    said = [ln for ln in err.splitlines() if "--codec zstd" in ln]
    assert len(said) == 1 and a in said[0] and "lz4" in said[0], err
    assert FeatureStore.open(a).codec == "lz4" and first_chunk_codecs(a) == {"LZ4"}
    b, _ = extract("b", "--codec", "zstd")
    assert Path(b).relative_to(tmp_path / "b") == Path(a).relative_to(tmp_path / "a")
    assert FeatureStore.open(b).codec == "zstd" and first_chunk_codecs(b) == {"Zstd"}
    assert "--codec" not in extract("b")[1]  # no option given: nothing to say
    fa, fb = FeatureStore.open(a).read_batch([0, 3]), FeatureStore.open(b).read_batch([0, 3])
    for k, v in fa["features"].items():
        assert np.array_equal(v, fb["features"][k])
