"""`pipeline sweep` reads a finished point back only while it is what its record claims: a folder moved
elsewhere reports where it is now, a point rescored or retrained by hand is computed again (or refused), a
point trained on images since changed is refused, and a folder whose records are gone is refused whole rather
than reported under new settings. A point whose training diverges is recorded as diverged and the sweep goes
on. One real sweep (tiny model, 2 points) is made once; each test works on its own copy."""
from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hairdiff.cache import FeatureStore
from hairdiff.core.errors import OutputMismatchError
from hairdiff.experiments.chain import checked_splits, extract_config, extract_store
from hairdiff.experiments.config import SweepConfig
from hairdiff.experiments.sweep import sweep
from hairdiff.train.config import TrainConfig
from hairdiff.train.loop import train
from tests.fixtures.cli import invoke
from tests.fixtures.layouts import make_figaro


def config(base: Path, out: Path, **kw) -> SweepConfig:
    return SweepConfig(**{**dict(dataset="figaro", root=str(base / "fig"), model="tiny", out=str(out), iters=2,
                                 views="none", timesteps="0,50", cache_root=str(base / "cache"), device="cpu"), **kw})


def poison(store_url: str) -> None:
    """Sample 0 of a store gets +inf features, written as extraction writes (checksums and all): training on
    it diverges for real."""
    store = FeatureStore.open(store_url, mode="r+")
    batch = store.read_batch([0])
    feats = {k: np.full_like(np.asarray(v, np.float32), np.inf) for k, v in batch["features"].items()}
    store.write_samples([0], feats, batch["masks"], [store.read_label(0)], batch["orig_sizes"])


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A finished sweep whose first point (timestep 0) diverged and whose second is done, run as a user runs it."""
    base = tmp_path_factory.mktemp("rb")
    make_figaro(base / "fig", "Training", frames=range(1, 5))
    make_figaro(base / "fig", "Testing", frames=(5, 6))
    cfg = config(base, base / "sw")
    ecfg = replace(extract_config(cfg, checked_splits(cfg.reproduce_config()), "train"), timestep=0)
    poison(extract_store(ecfg, log=lambda m: None).store)
    code, out, err = invoke("sweep", "--dataset", "figaro", "--root", base / "fig", "--model", "tiny", "--iters", "2",
                            "--views", "none", "--timesteps", "0,50", "--out", base / "sw", "--cache-root",
                            base / "cache", "--device", "cpu")
    return base, code, out, err


def copy(swept, tmp_path) -> Path:
    base = swept[0]
    shutil.copytree(base / "sw", tmp_path / "sw")
    return tmp_path / "sw"


def report(out: Path) -> dict:
    return json.loads((out / "sweep.json").read_text())


def spy():
    phases = []

    @contextmanager
    def progress(label, total, done=0):
        phase = {"label": label, "advanced": 0}
        phases.append(phase)

        def advance(n=1, info=""):
            phase["advanced"] += n

        yield advance

    return progress, phases


def files_state(folder: Path) -> dict:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()}


def test_a_diverged_point_is_recorded_and_the_sweep_goes_on(swept):
    base, code, out, err = swept
    assert code == 3, err  # the other points scored, every output written, then exit 3 for the divergence
    assert out.strip().splitlines()[-1] == str(base / "sw" / "sweep.md")
    rep = report(base / "sw")
    first, second = rep["points"]
    assert first["status"] == "diverged" and "non-finite" in first["diverged"] and first["metrics"] is None
    assert second["status"] == "done" and second["metrics"]["images"] == 2  # trained and scored after it
    assert rep["diverged"] == [first["name"]] and rep["best"] == second["name"] and rep["finished"] == 1
    assert json.loads((Path(first["folder"]) / "point.json").read_text())["outcome"] == "diverged"
    assert f"| `{first['name']}` (diverged) |" in (base / "sw" / "sweep.md").read_text()
    error = [line for line in err.splitlines() if line.startswith("error:")]
    assert error == [err.strip().splitlines()[-1]] and first["name"] in error[0] and "Traceback" not in err


def test_a_moved_sweep_reports_where_it_is_now_and_computes_nothing_again(swept, tmp_path):
    out = copy(swept, tmp_path)
    old = report(swept[0] / "sw")
    progress, phases = spy()
    rep = sweep(config(swept[0], out), progress=progress, log=lambda m: None)
    assert not [p for p in phases if p["advanced"]]  # nothing extracted, trained or scored again
    for row, was in zip(rep["points"], old["points"]):
        assert row["status"] == was["status"] and row["metrics"] == was["metrics"]
        assert row["folder"] == str(out / "points" / row["name"]) and row["run"] == str(Path(row["folder"]) / "run")
        assert Path(row["run"]).is_dir() and row["reused"]["train"]
        assert json.loads((Path(row["folder"]) / "point.json").read_text())["run"] == row["run"]
    assert rep["points"][0]["status"] == "diverged"  # read back, not trained into the divergence again


def test_a_point_rescored_or_retrained_by_hand_is_not_read_back_with_its_old_record(swept, tmp_path):
    out = copy(swept, tmp_path)
    cfg = config(swept[0], out)
    done = report(out)["points"][1]
    pdir = out / "points" / done["name"]
    edited = json.loads((pdir / "eval" / "metrics.json").read_text())
    (pdir / "eval" / "metrics.json").write_text(json.dumps({**edited, "mIoU": 99.0}))
    progress, phases = spy()
    row = sweep(cfg, progress=progress, log=lambda m: None)["points"][1]
    assert [p["label"] for p in phases if p["advanced"]] == [f"{done['name']}: eval"]  # scored again, alone
    assert row["reused"] == {"extract": True, "train": True, "eval": False}
    assert row["metrics"]["mIoU"] == done["metrics"]["mIoU"] == json.loads(
        (pdir / "eval" / "metrics.json").read_text())["mIoU"] != 99.0
    # Retrained by hand with another learning rate: refused, naming the point and what differs.
    run = json.loads((pdir / "run" / "config.json").read_text())["config"]
    train(TrainConfig(cache=run["stores"], out=str(pdir / "run"), iters=2, batch_size=run["batch_size"], lr=0.01,
                      crop=run["crop"], small=True, device="cpu", overwrite=True, workers=0), device="cpu")
    with pytest.raises(OutputMismatchError) as e:
        sweep(cfg, log=lambda m: None)
    assert done["name"] in str(e.value) and "lr" in str(e.value) and f"delete {pdir}" in str(e.value)


def test_with_its_records_deleted_a_sweep_is_refused_before_anything_is_written(swept, tmp_path):
    out = copy(swept, tmp_path)
    for m in out.rglob("manifest.json"):
        m.unlink()
    before = files_state(out)
    with pytest.raises(OutputMismatchError) as e:  # not "2 iterations" reported as done under --iters 3
        sweep(config(swept[0], out, iters=3), log=lambda m: None)
    assert "holds results of `sweep`" in str(e.value) and "no record" in str(e.value)
    assert files_state(out) == before
    # A point folder whose record alone is gone is refused too, before any point runs.
    shutil.rmtree(out)
    out = copy(swept, tmp_path)
    point = out / "points" / report(out)["points"][1]["name"]
    (point / "manifest.json").unlink()
    with pytest.raises(OutputMismatchError, match=f"{point.name} holds results of `sweep-point`"):
        sweep(config(swept[0], out), log=lambda m: None)


def test_a_point_trained_on_images_since_changed_is_refused(swept, tmp_path):
    out = copy(swept, tmp_path)
    image = swept[0] / "fig" / "Original" / "Training" / "Frame00002-org.jpg"
    kept = image.read_bytes()
    try:
        image.write_bytes(kept + b"\0")  # another file, same pixels as far as a decoder goes
        with pytest.raises(OutputMismatchError) as e:
            sweep(config(swept[0], out), log=lambda m: None)
        assert "other train images than --root holds now" in str(e.value) and "\n" not in str(e.value)
    finally:
        image.write_bytes(kept)
