"""Shared test fixtures: where the real data lives, and a scratch cache root per test session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    # Under pytest-xdist each worker would run torch (and BLAS) on every core: two workers on two cores then run four
    # busy threads that take turns (the 2-core CI machine: 194 s with a core each, 272-292 s without). The
    # workers, and the commands they start, inherit this process's environment, read when their libraries load: a
    # share of the cores each. An OMP_NUM_THREADS given by the user stands.
    workers = getattr(config.option, "numprocesses", None)
    if isinstance(workers, int) and workers > 0 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))


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
