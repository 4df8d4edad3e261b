"""Shared test fixtures: where the real data lives, and a scratch cache root per test session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
    # Tests never touch the user's real cache (stores or the built tiny model).
    root = tmp_path_factory.mktemp("hairdiff-cache")
    old = os.environ.get("HAIRDIFF_CACHE")
    os.environ["HAIRDIFF_CACHE"] = str(root)
    yield root
    if old is None:
        os.environ.pop("HAIRDIFF_CACHE", None)
    else:
        os.environ["HAIRDIFF_CACHE"] = old
