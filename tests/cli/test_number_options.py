"""Issue 26, class 6: every number option is bounded before anything runs. NaN and infinity, values float32
cannot hold, seeds numpy and torch refuse, and sizes beyond what they size (--log-every beyond --iters, a batch
or a thread pool of a billion) are one `error:` line naming the option, exit 2, and nothing written."""
from __future__ import annotations

import pytest

from hairdiff.core.fields import SEED_MAX
from tests.fixtures.cli import invoke

BIG = "1000000000"
HEAD = ["--head", "hidden_dim=32", "--head", "num_queries=8", "--head", "nheads=4", "--head", "dim_feedforward=64",
        "--head", "dec_layers=2", "--head", "enc_layers=1", "--head", "mask_dim=32", "--head", "num_points=256"]


def train(*bad):
    return ["train", "--cache", "{tmp}/store.zarr", "--out", "{tmp}/run", "--device", "cpu", "--no-progress", *HEAD,
            *bad]


def extract(*bad):
    return ["extract", "--dataset", "folder", "--root", "{tmp}/data", "--model", "tiny", "--cache-root",
            "{tmp}/cache", *bad]


CASES = {
    "lr-nan": (train("--lr", "nan"), "--lr nan"),
    "lr-inf": (train("--lr", "inf"), "--lr inf"),
    "lr-beyond-float32": (train("--lr", "1e39"), "--lr 1e+39"),
    "weight-decay-nan": (train("--weight-decay", "nan"), "--weight-decay nan"),
    "weight-decay-minus-inf": (train("--weight-decay", "-inf"), "--weight-decay -inf"),
    "grad-clip-nan": (train("--grad-clip", "nan"), "--grad-clip nan"),
    "grad-clip-inf": (train("--grad-clip", "inf"), "--grad-clip inf"),
    "log-every-beyond-iters": (train("--iters", "5", "--log-every", BIG), f"--log-every {BIG}: use at most 5"),
    "train-batch-billion": (train("--batch-size", BIG), f"--batch-size {BIG}"),
    "train-workers-billion": (train("--workers", BIG), f"--workers {BIG}"),
    "train-prefetch-billion": (train("--prefetch", BIG), f"--prefetch {BIG}"),
    "train-nproc-thousands": (train("--nproc", "1024", "--batch-size", "1024"), "--nproc 1024"),
    "train-seed-negative": (train("--seed", "-1"), "--seed -1"),
    "train-seed-huge": (train("--seed", str(SEED_MAX + 1)), f"--seed {SEED_MAX + 1}"),
    "head-nheads-0": (train("--head", "nheads=0"), "--head nheads=0"),
    "head-dropout-nan": (train("--head", "dropout=NaN"), "--head dropout=nan"),
    "head-queries-billion": (train("--head", f"num_queries={BIG}"), f"--head num_queries={BIG}"),
    "extract-resolution-huge": (extract("--resolution", str(64 * 10**6)), "--resolution 64000000"),
    "extract-shard-size-billion": (extract("--shard-size", BIG), f"--shard-size {BIG}"),
    "extract-writers-billion": (extract("--writers", BIG), f"--writers {BIG}"),
    "extract-workers-billion": (extract("--workers", BIG), f"--workers {BIG}"),
    "extract-batch-billion": (extract("--batch-size", BIG), f"--batch-size {BIG}"),
    "extract-seed-negative": (extract("--seed", "-5"), "--seed -5"),
    "eval-batch-billion": (["eval", "--run", "{tmp}/run", "--cache", "{tmp}/store.zarr", "--out", "{tmp}/eval",
                            "--batch-size", BIG], f"--batch-size {BIG}"),
    "predict-batch-billion": (["predict", "{tmp}/photo.png", "--run", "{tmp}/run", "--out", "{tmp}/pred",
                               "--batch-size", BIG], f"--batch-size {BIG}"),
    "demo-size-not-64": (["demo", "--out", "{tmp}/demo", "--size", "100"], "--size 100"),
    "demo-size-huge": (["demo", "--out", "{tmp}/demo", "--size", str(64 * 10**6)], "--size 64000000"),
    "demo-seed-negative": (["demo", "--out", "{tmp}/demo", "--seed", "-1"], "--seed -1"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_number_out_of_bounds_is_one_line_before_anything_runs(name, tmp_path, monkeypatch):
    monkeypatch.setenv("HAIRDIFF_CACHE", str(tmp_path / "home-cache"))
    (tmp_path / "data").mkdir()
    before = set(tmp_path.rglob("*"))
    args, words = CASES[name]
    code, _, err = invoke(*[a.format(tmp=tmp_path) for a in args])
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert code == 2 and words in lines[0], (code, lines[0])
    assert set(tmp_path.rglob("*")) == before


def test_log_every_defaults_to_the_iterations_when_fewer():
    from hairdiff.train.config import TrainConfig

    assert TrainConfig(cache=["s"], out="o", iters=3).log_every == 3
    assert TrainConfig(cache=["s"], out="o", iters=300).log_every == 20
