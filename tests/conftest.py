"""Shared test fixtures: where the real data lives, and a scratch cache root per test session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _share_the_cores() -> None:
    # Under pytest-xdist each worker process would run torch on every core: two workers on two cores then run four
    # busy threads that take turns (measured on the 2-core CI machine: 194 s with a core each, 240-295 s without).
    # A worker's share of the cores, for it and the commands it starts (they inherit the environment); an
    # OMP_NUM_THREADS given by the user stands.
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers and "OMP_NUM_THREADS" not in os.environ:
        import torch

        threads = max(1, (os.cpu_count() or 1) // int(workers))
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


_share_the_cores()


def pytest_addoption(parser):
    parser.addoption(
        "--shared-data",
        default=os.environ.get("HAIRDIFF_SHARED_DATA", str(REPO.parent / "shared" / "data")),
        help="folder holding figaro1k/ and celebamask-hq/ in their published layouts",
    )


@pytest.fixture(scope="session")
def shared_data(request) -> Path:
    return Path(request.config.getoption("--shared-data"))


@pytest.fixture(scope="session")
def figaro_root(shared_data) -> Path:
    root = shared_data / "figaro1k" / "Figaro1k"
    if not (root / "Original" / "Training").is_dir():
        pytest.skip(f"real Figaro-1k data not found at {root} (pass --shared-data)")
    return root


@pytest.fixture(scope="session")
def celebamask_root(shared_data) -> Path:
    root = shared_data / "celebamask-hq" / "CelebAMask-HQ"
    if not (root / "CelebA-HQ-img").is_dir():
        pytest.skip(f"real CelebAMask-HQ data not found at {root} (pass --shared-data)")
    return root


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    # Tests never touch the user's real cache (stores or the built tiny model). The tiny model is built once for
    # the session (seconds each time) in a folder of its own, which every test and every command it starts (they
    # inherit the environment) finds again, whatever cache root it gives: a cache root of its own would
    # otherwise mean a build of its own.
    root = tmp_path_factory.mktemp("hairdiff-cache")
    models = tmp_path_factory.mktemp("hairdiff-models") / "models"
    old = {k: os.environ.get(k) for k in ("HAIRDIFF_CACHE", "HAIRDIFF_MODELS")}
    os.environ["HAIRDIFF_CACHE"], os.environ["HAIRDIFF_MODELS"] = str(root), str(models)
    yield root
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
