"""Issue 26, class 11: two trainings into one folder at once. The second is refused while the first holds the
folder, naming it; a lock left by a killed run is taken over (its pid is gone here, its lease elsewhere)."""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from hairdiff.core.errors import RunDirError
from hairdiff.train.run_lock import LEASE_SECONDS, LOCK, hold_run_dir
from tests.fixtures.cli import invoke, popen_pipeline
from tests.fixtures.stores import TINY, make_train_store

HEAD = [f"--head={k}={v}" for k, v in TINY.items()]


def _train(store, run, *extra) -> list:
    return ["train", "--cache", store, "--out", run, "--batch-size", "2", "--device", "cpu", "--no-small",
            "--workers", "0", "--no-progress", *HEAD, *extra]


def test_a_second_training_into_a_held_folder_is_refused_and_a_killed_holder_releases_it(tmp_path):
    store, run = make_train_store(tmp_path, n=4), tmp_path / "run"
    first = popen_pipeline(*_train(store, run, "--iters", "100000"), cache_root=tmp_path / "hc",
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not (run / "log.jsonl").exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert first.poll() is None, first.stderr.read().decode()
        code, _, err = invoke(*_train(store, run, "--iters", "2"))
        errors = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
        assert code == 2 and errors == [err.strip().splitlines()[-1]] and "Traceback" not in err, err
        assert f"error: {run} is in use by another `pipeline train` (pid {first.pid} " in err
        assert first.poll() is None  # the refused command touched nothing of the running one
    finally:
        first.kill()
        first.wait()
    assert (run / LOCK).exists()  # what a killed run leaves
    code, out, err = invoke(*_train(store, run, "--iters", "2", "--overwrite"))
    assert code == 0, err
    assert json.loads((run / "run.json").read_text())["iterations"] == 2 and not (run / LOCK).exists()


def test_a_lock_of_another_host_is_kept_for_its_lease_then_taken_over(tmp_path):
    lock = tmp_path / LOCK
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "time": time.time(), "token": "t"}))
    with pytest.raises(RunDirError, match="pid 1 on elsewhere"):
        with hold_run_dir(tmp_path):
            pass
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "time": time.time() - LEASE_SECONDS - 1, "token": "t"}))
    with hold_run_dir(tmp_path):
        assert json.loads(lock.read_text())["host"] != "elsewhere"
    assert not lock.exists()
