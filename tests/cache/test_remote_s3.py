"""Stores in object storage: a real S3 API (moto's server on loopback) reached through s3fs."""
from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from hairdiff.demo.hairlike import make_hairlike_dataset
from tests.fixtures.cli import run_pipeline

moto_server = pytest.importorskip("moto.server")
s3fs = pytest.importorskip("s3fs")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def s3(monkeypatch):
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing-key-id",
           "AWS_SECRET_ACCESS_KEY": "testing-secret-never-written", "AWS_DEFAULT_REGION": "us-east-1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": env["AWS_ENDPOINT_URL"]})
    fs.mkdir("hair-bucket")
    yield env
    server.stop()


def run(args, env_extra, cache_root):
    """The command in this process: the s3 fixture put the endpoint and credentials in its environment (one
    process running several commands must not read stale listings of the bucket either)."""
    return run_pipeline(*args, cache_root=cache_root)


def test_extract_to_s3_info_pull_and_concurrent_readers(s3, tmp_path):
    data = make_hairlike_dataset(tmp_path / "data", n=6, size=64, seed=1)
    args = ["extract", "--dataset", "folder", "--root", data, "--model", "tiny", "--resolution", "64",
            "--shard-size", "2", "--workers", "0", "--cache-root", "s3://hair-bucket/caches"]
    url = run(args, s3, tmp_path / "local").stdout.split()[-1]
    assert url.startswith("s3://hair-bucket/caches/folder/all/")
    info = json.loads(run(["cache", "info", url, "--json"], s3, tmp_path / "local").stdout)
    assert info["done"] == 6 and info["dataset"] == "folder" and len(info["levels"]) == 4
    assert "testing-secret-never-written" not in json.dumps(info)
    # presence of every shard is checked through the bucket's listing, not read back as zeros
    assert run(["cache", "verify", url], s3, tmp_path / "local").stdout.strip() == (
        f"{url}: 6 of 6 samples done and readable, 0 not extracted yet, 0 corrupt")
    # the same command again reuses the remote store
    assert "computed 0" in run(args, s3, tmp_path / "local").stderr
    pulled = tmp_path / "pulled.zarr"
    run(["cache", "pull", url, pulled], s3, tmp_path / "local")
    for p in pulled.rglob("*"):
        if p.is_file():
            assert b"testing-secret-never-written" not in p.read_bytes()
    # many readers at once, read-only
    from concurrent.futures import ThreadPoolExecutor

    from hairdiff.cache import FeatureStore

    local = FeatureStore.open(str(pulled))

    def read(_):
        return FeatureStore.open(url).read_batch(range(6))["features"]

    with ThreadPoolExecutor(4) as pool:
        for feats in pool.map(read, range(4)):
            ref = local.read_batch(range(6))["features"]
            for k in ref:
                assert np.array_equal(feats[k], ref[k])
