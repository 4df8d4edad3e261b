"""The shared pieces: device/dtype names, atomic writes, URLs, local folders when the cache root is remote."""
from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch

from hairdiff.core.devices import check_device, resolve_device, resolve_dtype
from hairdiff.core.errors import HairdiffError, StoreAccessError, UsageError
from hairdiff.core.files import atomic_write, atomic_write_json, replacing
from hairdiff.core.paths import local_cache_dir, models_dir
from hairdiff.core.urls import is_remote, local_path, remote_access


def test_devices_and_dtypes():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_dtype("auto", torch.device("cpu")) is torch.float32
    assert resolve_dtype("bf16", "cpu") is torch.bfloat16 and resolve_dtype("float16", "cpu") is torch.float16
    for bad in ("gpu", "cuda:x", "cpu:0"):
        with pytest.raises(UsageError, match=bad):
            check_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA device"):
            check_device("cuda")
        with pytest.raises(UsageError, match="cuda:1"):
            check_device("cuda:1")
    with pytest.raises(UsageError, match="--dtype 'half'"):
        resolve_dtype("half", "cpu")
    assert issubclass(UsageError, HairdiffError) and UsageError.exit_code == 2


def test_atomic_write_keeps_the_old_content_when_writing_fails(tmp_path):
    target = tmp_path / "sub" / "report.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with replacing(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text().startswith("{") and list(target.parent.iterdir()) == [target]
    atomic_write(target, b"new", durable=True)
    assert target.read_bytes() == b"new"


def test_urls():
    assert is_remote("s3://b/x") and not is_remote("file:///tmp/x") and not is_remote("/tmp/x")
    assert local_path("file:///tmp/x") == "/tmp/x" and local_path("s3://b/x") == "s3://b/x"


def test_models_folder_is_local_when_the_cache_root_is_a_url(monkeypatch, tmp_path):
    monkeypatch.setenv("HAIRDIFF_CACHE", "s3://bucket/hair-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("HAIRDIFF_MODELS", raising=False)
    assert models_dir() == tmp_path / "hairdiff" / "models" and "s3:" not in str(models_dir())
    monkeypatch.setenv("HAIRDIFF_MODELS", str(tmp_path / "m"))
    assert models_dir() == tmp_path / "m"
    monkeypatch.setenv("HAIRDIFF_MODELS", "s3://bucket/models")  # built and hashed here: never a URL
    with pytest.raises(UsageError, match=r"HAIRDIFF_MODELS s3://bucket/models: .* set it to a local folder, or unset"):
        models_dir()
    monkeypatch.setenv("HAIRDIFF_MODELS", str(tmp_path / "m"))
    monkeypatch.setenv("HAIRDIFF_CACHE", str(tmp_path / "c"))
    assert local_cache_dir() == Path(tmp_path / "c")


def test_a_full_local_disk_during_a_copy_is_not_blamed_on_the_store():
    # A pull writes this machine's disk inside the remote read: its ENOSPC reaches the copy's own handling ("free
    # space"), while the store's client failures become one line about the URL and credentials.
    with pytest.raises(OSError) as full:
        with remote_access("s3://bucket/a.zarr", "copy from"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert not isinstance(full.value, StoreAccessError)
    with pytest.raises(StoreAccessError, match=r"cannot copy from s3://bucket/a.zarr \(PermissionError: .*credentials"):
        with remote_access("s3://bucket/a.zarr", "copy from"):
            raise PermissionError(errno.EACCES, "Access Denied")
