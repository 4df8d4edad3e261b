"""`--resume` on a run that finished: "nothing to do" only for the run's own settings and with its head there.
A finished run of other settings (its checkpoints deleted or not), one whose record names no settings, or one
whose head is gone is refused in one line, never returned as this run's result or silently trained over."""
from __future__ import annotations

import json
import shutil

import pytest

from hairdiff.core.errors import RunDirError, RunFileError
from hairdiff.train.loop import train
from tests.fixtures.stores import make_train_store, toy_train_config


@pytest.fixture()
def finished(tmp_path):
    store = make_train_store(tmp_path, n=4)
    run = tmp_path / "run"
    train(toy_train_config(store, run, iters=2, batch_size=2, ckpt_every=2), device="cpu")
    return store, run


def resume(store, run, **kw):
    return train(toy_train_config(store, run, **{"iters": 2, "batch_size": 2, "ckpt_every": 2, "resume": True, **kw}),
                 device="cpu")


def test_the_same_settings_find_it_finished(finished):
    store, run = finished
    before = (run / "head.safetensors").stat().st_mtime_ns
    assert resume(store, run)["iterations"] == 2
    assert (run / "head.safetensors").stat().st_mtime_ns == before  # nothing trained again


def test_other_settings_are_refused_even_with_the_checkpoints_gone(finished):
    store, run = finished
    with pytest.raises(RunDirError, match=r"lr: checkpoint 0\.0001 vs now 0\.01"):
        resume(store, run, lr=0.01)
    shutil.rmtree(run / "checkpoints")
    head = (run / "head.safetensors").read_bytes()
    with pytest.raises(RunDirError, match="iters: checkpoint 2 vs now 3"):
        resume(store, run, iters=3)  # not trained from scratch over the finished run
    assert (run / "head.safetensors").read_bytes() == head


def test_a_record_without_settings_or_a_missing_head_is_one_line(finished):
    store, run = finished
    (run / "head.safetensors").unlink()
    with pytest.raises(RunFileError, match="head.safetensors is missing") as e:
        resume(store, run)
    assert "\n" not in str(e.value)
    record = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({k: v for k, v in record.items() if k != "config"}))
    with pytest.raises(RunFileError, match="records no settings"):
        resume(store, run)


def test_a_start_from_iteration_0_keeps_no_best_of_a_run_whose_records_are_gone(tmp_path):
    from tests.fixtures.cli import invoke
    from tests.fixtures.stores import TINY

    store, val = make_train_store(tmp_path, "train", n=4), make_train_store(tmp_path, "val", n=2, seed=9)
    run = tmp_path / "run"
    args = ("--cache", store, "--out", run, "--batch-size", "2", "--device", "cpu", "--no-progress", "--no-small",
            *[f"--head={k}={v}" for k, v in TINY.items()])
    code, _, err = invoke("train", *args, "--iters", "2", "--val", val, "--val-every", "1")
    assert code == 0 and (run / "best").is_dir(), err
    for gone in ("run.json", "config.json", "checkpoints"):  # the records of that run, not its outputs
        shutil.rmtree(run / gone) if (run / gone).is_dir() else (run / gone).unlink()
    code, _, err = invoke("train", *args, "--iters", "1", "--lr", "0.01", "--resume")
    assert code == 0 and "starting at iteration 0" in err and "best/" in err, err
    assert not (run / "best").exists()  # the earlier start's best head is not this run's
    code, _, err = invoke("eval", "--run", run, "--cache", val, "--out", tmp_path / "eval", "--device", "cpu",
                          "--overlays", "0")
    assert code == 0, err
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["head"]["source"] == "final"


def test_the_validation_store_is_one_setting_however_its_path_is_spelled(tmp_path, monkeypatch):
    from tests.fixtures.cli import invoke
    from tests.fixtures.stores import TINY

    store, val = make_train_store(tmp_path, "train", n=4), make_train_store(tmp_path, "val", n=2, seed=9)
    monkeypatch.chdir(tmp_path)
    args = ("--cache", store, "--out", tmp_path / "run", "--batch-size", "2", "--device", "cpu", "--no-progress",
            "--no-small", "--iters", "2", *[f"--head={k}={v}" for k, v in TINY.items()])
    code, _, err = invoke("train", *args, "--val", "val.zarr")
    assert code == 0, err
    code, _, err = invoke("train", *args, "--val", val, "--resume")
    assert code == 0 and "nothing to do" in err, err
