"""An output folder whose record (manifest.json) is gone while its results are there is refused whole, before
anything is written: never rebound to the new command's settings, which would leave old results under them
and refuse the command that made them afterwards. reproduce (its plan: every check before the first write),
demo, and core/manifest.bind itself."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hairdiff.core.errors import OutputMismatchError
from hairdiff.core.manifest import MANIFEST, bind
from hairdiff.demo.run import DemoConfig, run_demo
from hairdiff.experiments.config import ReproduceConfig
from hairdiff.experiments.reproduce import TRAINED_ON, plan
from tests.fixtures.layouts import make_figaro


def files_state(folder: Path) -> dict:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()}


def test_bind_refuses_results_without_their_record(tmp_path):
    (tmp_path / "report.json").write_text("{}")
    with pytest.raises(OutputMismatchError) as e:
        bind(tmp_path, "reproduce", {"limit": 4}, fix="f", outputs=("run", "report.json"))
    assert "holds results of `reproduce` (report.json) but no record" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / MANIFEST).exists()
    assert bind(tmp_path / "new", "reproduce", {"limit": 4}, fix="f", outputs=("run", "report.json")) is False


def test_reproduce_with_its_manifest_deleted_is_refused_before_any_write(tmp_path):
    root = make_figaro(tmp_path / "fig", "Training", frames=range(1, 11))  # no Testing split: a stand-in
    kw = dict(dataset="figaro", root=str(root), model="tiny", out=str(tmp_path / "r"), iters=2,
              cache_root=str(tmp_path / "cache"), device="cpu")
    plan(ReproduceConfig(**kw, limit=6))
    out = tmp_path / "r"
    test_ids = (out / "splits" / "test.txt").read_text()
    (out / MANIFEST).unlink()
    before = files_state(out)
    for limit in (8, 6):  # another --limit, then the command that made the folder: both refused, nothing rebound
        with pytest.raises(OutputMismatchError, match="holds results of `reproduce` \\(splits\\) but no record"):
            plan(ReproduceConfig(**kw, limit=limit))
        assert files_state(out) == before and (out / "splits" / "test.txt").read_text() == test_ids


def test_reproduce_with_a_run_but_no_record_of_its_training_data_is_refused(tmp_path):
    root = make_figaro(tmp_path / "fig", "Training", frames=range(1, 11))
    cfg = ReproduceConfig(dataset="figaro", root=str(root), model="tiny", out=str(tmp_path / "r"), limit=6,
                          cache_root=str(tmp_path / "cache"), device="cpu")
    plan(cfg)
    (tmp_path / "r" / "run").mkdir()  # a run that the manifest does not say it trained on any data
    assert TRAINED_ON not in json.loads((tmp_path / "r" / MANIFEST).read_text())
    with pytest.raises(OutputMismatchError, match=f"holds results of `{TRAINED_ON}` \\(run\\)"):
        plan(cfg)


def test_demo_with_its_manifest_gone_writes_nothing(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "demo.json").write_text("{}")  # what a finished demo leaves beside its data, stores and run
    with pytest.raises(OutputMismatchError, match="holds results of `demo` \\(demo.json\\)"):
        run_demo(DemoConfig(out=str(out), train_images=2, test_images=1, size=64, iters=1), log=lambda m: None)
    assert sorted(p.name for p in out.iterdir()) == ["demo.json"]
