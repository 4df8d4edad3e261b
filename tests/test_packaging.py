"""What `pip install .` puts into site-packages: one package, `hairdiff`, and the `pipeline` script; importing it
loads nothing heavy."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.fixtures import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    pytest.importorskip("setuptools", minversion="68")
    out = tmp_path_factory.mktemp("wheel")
    # A copy of the checkout: setuptools builds in place and must not leave build/ in the working tree.
    src = out / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__", "*.zarr"))
    # No build isolation: the build backend is already in the test environment and needs no network.
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return zipfile.ZipFile(next(out.glob("hairdiff-*.whl")))


def test_wheel_holds_nothing_but_the_hairdiff_package(wheel):
    names = wheel.namelist()
    top = {n.split("/", 1)[0] for n in names}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert top - dist_info == {"hairdiff"}, sorted(top)
    # The package's own module is the root __init__ (the Python API's lazy names), and the only root module:
    # the checkout's scripts (pipeline.py, setup.py) are not shipped.
    assert [n for n in names if n.count("/") == 1 and not n.split("/")[0].endswith(".dist-info")] == \
        ["hairdiff/__init__.py"]
    assert "HairSegmenter" in wheel.read("hairdiff/__init__.py").decode()
    for package in ("core", "cli", "cache", "extract", "extract/readers", "train", "model/mask2former", "evaluate",
                    "experiments", "demo"):
        assert f"hairdiff/{package}/__init__.py" in names, package
    assert "hairdiff/evaluate/paper_results.json" in names
    assert not any(n.endswith(("pipeline.py", "setup.py")) or n.startswith("hairdiff/tests") for n in names)
    entry = wheel.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "pipeline = hairdiff.cli:main" in entry


def test_checkout_script_runs_without_installing(tmp_path):
    # `python pipeline.py` maps the checkout's folders to `hairdiff` itself; -I ignores the installed copy.
    p = subprocess.run([sys.executable, "-I", str(REPO / "pipeline.py"), "--version"], capture_output=True,
                       text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.startswith("hairdiff ")


def test_importing_the_package_loads_nothing_heavy_until_a_name_is_used():
    code = ("import sys, hairdiff; heavy = [m for m in ('torch', 'zarr', 'gradio') if m in sys.modules]; "
            "assert not heavy, heavy; from hairdiff import HairSegmenter, open_store; "
            "assert 'torch' in sys.modules and HairSegmenter.__module__ == 'hairdiff.evaluate.segmenter'")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
