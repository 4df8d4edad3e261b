"""The CLI fault table: a user's mistake, through the real entry point, is one line on stderr starting with
"error:" that names the value at fault, exit status 2, and nothing left behind (no store, no run folder,
no report, no output folder)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.fixtures.cli import invoke

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA device")
ONE_GPU_AT_MOST = pytest.mark.skipif(torch.cuda.device_count() > 1, reason="cuda:1 exists on this machine")


def extract(*bad):
    return ["extract", "--dataset", "figaro", "--root", "{tmp}/data", "--model", "tiny", "--cache-root",
            "{tmp}/cache", *bad]


def train(*bad):
    return ["train", "--cache", "{tmp}/data/store.zarr", "--out", "{tmp}/run", "--device", "cpu", *bad]


def evaluate(*bad, run="{tmp}/data/run"):
    return ["eval", "--run", run, "--cache", "{tmp}/data/store.zarr", "--out", "{tmp}/eval", *bad]


def predict(*images):
    return ["predict", *images, "--run", "{tmp}/data/run", "--out", "{tmp}/pred", "--device", "cpu"]


def case(name, args, words, marks=()):
    """args: the command line, {tmp} standing for the test's folder; words: what the error line must name."""
    return pytest.param(args, words, id=name, marks=marks)


CASES = [
    case("train-batch-size-0", train("--batch-size", "0"), ["--batch-size 0"]),
    case("train-iters-0", train("--iters", "0"), ["--iters 0"]),
    case("train-head-typo", train("--head", "num_querys=5"), ["num_querys", "num_queries"]),
    case("train-device-cuda", train("--device", "cuda"), ["--device cuda", "cpu"], NO_GPU),
    case("eval-device-cuda1", evaluate("--device", "cuda:1"), ["--device cuda:1"], ONE_GPU_AT_MOST),
    case("eval-missing-run", evaluate("--device", "cpu", run="{tmp}/no-such-run"), ["--run", "no-such-run"]),
    case("predict-missing-image", predict("{tmp}/data/photo.png", "{tmp}/data/gone.jpg"), ["gone.jpg", "no such"]),
    case("predict-empty-folder", predict("{tmp}/data/empty"), ["empty", "no image file"]),
    case("predict-not-an-image", predict("{tmp}/data/notes.txt"), ["notes.txt", "not an image file name"]),
    case("verify-not-a-store", ["cache", "verify", "{tmp}/data"], ["data", "no feature store"]),
    case("extract-resolution-500", extract("--resolution", "500"), ["--resolution 500", "multiple of 64"]),
    case("extract-resolution-32", extract("--resolution", "32"), ["--resolution 32"]),
    case("extract-resolution-0", extract("--resolution", "0"), ["--resolution 0"]),
    case("extract-timestep-5000", extract("--timestep", "5000"), ["--timestep 5000"]),
    case("extract-timestep-minus-1", extract("--timestep", "-1"), ["--timestep -1"]),
    case("extract-batch-size-0", extract("--batch-size", "0"), ["--batch-size 0"]),
    case("extract-limit-0", extract("--limit", "0"), ["--limit 0"]),
    case("extract-limit-minus-3", extract("--limit", "-3"), ["--limit -3"]),
    case("extract-taps-unknown", extract("--taps", "foo.bar"), ["foo.bar"]),
    case("extract-precision-int4", extract("--precision", "int4"), ["--precision", "int4", "see `pipeline extract --help`"]),
]


def _files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


@pytest.fixture()
def inputs(tmp_path, monkeypatch):
    """Real, valid inputs beside the one mistake: an image, a folder without images, a text file."""
    from PIL import Image

    data = tmp_path / "data"
    (data / "empty").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(data / "photo.png")
    (data / "notes.txt").write_text("not an image")
    # Anything a command would write to the default cache (models, reports) lands here, where it is seen.
    monkeypatch.setenv("HAIRDIFF_CACHE", str(tmp_path / "home-cache"))
    return tmp_path


@pytest.mark.parametrize("args,words", CASES)
def test_a_user_mistake_is_one_line_exit_2_and_leaves_nothing(args, words, inputs):
    before = _files(inputs)
    code, _, err = invoke(*[a.format(tmp=inputs) for a in args])
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert code == 2, (code, err)
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert _files(inputs) == before, sorted(map(str, _files(inputs) - before))
