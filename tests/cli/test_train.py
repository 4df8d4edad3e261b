"""`pipeline train` says what it trains on, where --resume starts, and what Ctrl-C kept."""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import zarr

from tests.fixtures.cli import invoke, popen_pipeline
from tests.fixtures.stores import TINY, make_train_store

HEAD = [f"--head={k}={v}" for k, v in TINY.items()]


def train(store, run, *extra):
    stores = [store] if isinstance(store, str) else store
    return invoke("train", *[a for s in stores for a in ("--cache", s)], "--out", run, "--batch-size", "2",
                  "--device", "cpu", "--no-progress", "--no-small", "--workers", "0", "--ckpt-every", "1", *HEAD,
                  *extra)


def test_train_says_what_it_trains_on(tmp_path):
    a = make_train_store(tmp_path, "a", n=4)
    b = make_train_store(tmp_path, "b", n=6, seed=1)
    zarr.open_group(b, mode="r+")["done"][0] = 0  # one sample not extracted (yet)
    code, _, err = train([a, b], tmp_path / "run", "--iters", "1")
    assert code == 0, err
    assert f"training on 9 done samples of 10 in {a} (4 of 4), {b} (5 of 6)" in err.splitlines()


def test_resume_says_where_it_starts(tmp_path):
    store = make_train_store(tmp_path, n=4)
    run = tmp_path / "run"
    code, _, err = train(store, run, "--iters", "3", "--resume")
    assert code == 0 and f"--resume: no checkpoint in {run}, nothing to resume: starting at iteration 0" in err, err
    code, _, err = train(store, tmp_path / "run2", "--iters", "3", "--stop-at", "2")
    assert code == 0 and "resuming from" not in err, err
    code, _, err = train(store, tmp_path / "run2", "--iters", "3", "--resume")
    assert code == 0, err
    assert f"resuming from {tmp_path / 'run2' / 'checkpoints' / 'iter_00000002'} (iteration 2 of 3)" in err
    code, _, err = train(store, tmp_path / "run2", "--iters", "3", "--resume")
    assert code == 0 and f"--resume: {tmp_path / 'run2'} finished all 3 iterations already: nothing to do" in err


def test_ctrl_c_says_what_was_kept_and_how_to_continue(tmp_path):
    store = make_train_store(tmp_path, n=4)
    run = tmp_path / "run"
    args = ["train", "--cache", store, "--out", run, "--iters", "100000", "--batch-size", "2", "--device", "cpu",
            "--no-small", "--workers", "0", "--ckpt-every", "2", *HEAD]
    proc = popen_pipeline(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    # a checkpoint at iteration 4 or later: only the newest two are kept, so iter_00000004 itself may come and go
    # between two looks
    while (max((int(p.name[5:]) for p in (run / "checkpoints").glob("iter_*")), default=0) < 4
           and proc.poll() is None and time.time() < deadline):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: interrupted at iteration ") and "Traceback" not in err, err
    kept, rest = last.split("kept the checkpoint ", 1)[1].split(" (iteration ", 1)
    iteration = int(rest.split(" of 100000)")[0])
    assert Path(kept) == run / "checkpoints" / f"iter_{iteration:08d}" and Path(kept).is_dir(), last
    assert last.endswith("continue with the same command and --resume")
    # ... and that command continues from the checkpoint the line named
    code, _, err = invoke(*args, "--resume", "--stop-at", iteration + 1, "--no-progress")
    assert code == 0 and f"resuming from {kept} (iteration {iteration} of 100000)" in err, err
