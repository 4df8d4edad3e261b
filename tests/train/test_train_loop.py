"""`pipeline train` on small real feature stores: the loss falls, logs/curves/run.json are written, bad
input (mismatched stores, an occupied run folder, inf features) stops with a clear error, and nothing in
a run folder is a pickle."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from hairdiff.cache import FeatureStore
from hairdiff.core.errors import RunDirError, StoreMismatchError, TrainingDiverged
from hairdiff.core.versions import versions
from hairdiff.model.checkpoints import latest_checkpoint
from hairdiff.model.trained import load_head
from hairdiff.train.data import CachedFeatures, Position, global_batch
from hairdiff.train.loop import train
from tests.fixtures.cli import invoke
from tests.fixtures.stores import TINY, log_rows, toy_train_config
from tests.fixtures.stores import make_train_store as make_store


def run_train(stores, out, **kw):
    return train(toy_train_config(stores, out, **kw), device="cpu")


def test_loss_falls_and_run_is_complete(tmp_path):
    store = make_store(tmp_path)
    run = tmp_path / "run"
    summary = run_train([store], run, iters=40, batch_size=4, lr=1e-3, seed=0, ckpt_every=20)
    rows = log_rows(run)
    assert [r["iter"] for r in rows] == list(range(1, 41))
    first, last = np.mean([r["loss"] for r in rows[:5]]), np.mean([r["loss"] for r in rows[-5:]])
    assert last < 0.6 * first, (first, last)
    for key in ("loss_ce", "loss_mask", "loss_dice", "lr", "grad_norm", "images_per_s"):
        assert key in rows[0], sorted(rows[0])
    lrs = [r["lr"] for r in rows]
    assert lrs[0] == pytest.approx(1e-3) and all(a > b for a, b in zip(lrs, lrs[1:]))
    assert (run / "curves.png").stat().st_size > 10_000
    run_json = json.loads((run / "run.json").read_text())
    assert run_json["final_loss"] == pytest.approx(rows[-1]["loss"]) and run_json["iterations"] == 40
    assert run_json["images_per_s"] > 0 and summary["finished"]
    # what else makes the same settings give other weights: the torch build and the threads it summed with
    assert run_json["environment"] == {"versions": versions(("torch", "numpy")), "threads": torch.get_num_threads()}

    head, meta = load_head(run)
    assert set(meta) == {"fingerprint", "fingerprint_inputs", "levels", "stores", "head_config", "iteration"}
    assert meta["iteration"] == 40 and meta["levels"][0]["name"] == "up_blocks.1"
    assert meta["stores"][0]["fingerprint"] == meta["fingerprint"] and meta["stores"][0]["url"] == store
    batch = CachedFeatures.from_urls([store]).read(np.arange(2))
    with torch.no_grad():
        outputs = head({k: v.float() for k, v in batch["features"].items()})
    assert outputs["pred_logits"].shape == (2, TINY["num_queries"], 3)


def test_mismatched_stores_are_refused(tmp_path):
    a = make_store(tmp_path, "a", n=4, model="encoder-one")
    b = make_store(tmp_path, "b", n=4, model="encoder-two")
    with pytest.raises(StoreMismatchError) as e:
        run_train([a, b], tmp_path / "run", iters=1, batch_size=2, device="cpu")
    msg = str(e.value)
    assert a in msg and b in msg
    assert FeatureStore.open(a).fingerprint in msg and FeatureStore.open(b).fingerprint in msg
    assert not (tmp_path / "run").exists()


def test_two_stores_with_one_fingerprint_train_together(tmp_path):
    a = make_store(tmp_path, "a", n=4, seed=1)
    b = make_store(tmp_path, "b", n=4, seed=2)
    data = CachedFeatures.from_urls([a, b])
    assert len(data) == 8
    # The sample order is a pure function of (seed, position), and every sample comes once per epoch.
    batch, pos = global_batch(len(data), 8, seed=3, pos=Position())
    assert sorted(batch.tolist()) == list(range(8)) and pos == Position(1, 0)
    b1, p1 = global_batch(len(data), 3, seed=3, pos=Position(0, 6))
    assert p1 == Position(1, 1) and list(b1[:2]) == list(batch[6:])


def test_occupied_run_folder_needs_resume_or_overwrite(tmp_path):
    store = make_store(tmp_path, n=4)
    run = tmp_path / "run"
    run_train([store], run, iters=2, batch_size=2, device="cpu", ckpt_every=1)
    with pytest.raises(RunDirError, match="--resume"):
        run_train([store], run, iters=2, batch_size=2, device="cpu")
    run_train([store], run, iters=1, batch_size=2, device="cpu", overwrite=True)
    assert [r["iter"] for r in log_rows(run)] == [1]


def test_non_finite_loss_stops_keeps_last_checkpoint_and_exits_nonzero(tmp_path):
    bad = 9
    store = make_store(tmp_path, n=12, bad=(bad,))
    # The first iteration whose batch holds the inf sample, from the (public, pure) sample order.
    pos, k = Position(), 0
    while True:
        batch, pos = global_batch(12, 2, seed=0, pos=pos)
        k += 1
        if bad in batch:
            break
    run = tmp_path / "run"
    code, out, err = invoke("train", "--cache", store, "--out", run, "--iters", "20", "--batch-size", "2",
                            "--device", "cpu", "--ckpt-every", "1", "--no-progress", "--no-small",
                            *[f"--head={k_}={v}" for k_, v in TINY.items()])
    assert code == 3, err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and f"non-finite loss at iteration {k}" in errors[0], err
    assert not (run / "head.safetensors").exists() and not (run / "run.json").exists()
    assert [r["iter"] for r in log_rows(run)] == list(range(1, k))
    if k > 1:
        assert latest_checkpoint(run).name == f"iter_{k - 1:08d}"
        _, meta = load_head(run)
        assert meta["iteration"] == k - 1
    with pytest.raises(TrainingDiverged):
        run_train([store], tmp_path / "run2", iters=20, batch_size=2, device="cpu")


def test_run_folder_holds_no_pickle(tmp_path):
    store = make_store(tmp_path, n=4)
    run = tmp_path / "run"
    run_train([store], run, iters=4, batch_size=2, device="cpu", ckpt_every=2, stop_at=3)
    run_train([store], run, iters=4, batch_size=2, device="cpu", ckpt_every=2, resume=True)
    files = [p for p in run.rglob("*") if p.is_file()]
    assert files
    for p in files:
        assert p.suffix in {".safetensors", ".json", ".jsonl", ".png"}, p
        raw = p.read_bytes()
        if p.suffix == ".safetensors":
            # The format: an 8-byte header length, then a JSON header, then raw tensor bytes.
            n = int.from_bytes(raw[:8], "little")
            json.loads(raw[8:8 + n])
            with safe_open(str(p), framework="pt") as f:
                assert list(f.keys())
            continue
        assert not (raw[:1] == b"\x80" and raw[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")), f"{p} is a pickle"
        assert not raw.startswith(b"PK"), f"{p} looks like a torch.save zip"
        if p.suffix == ".json":
            json.loads(raw)
        elif p.suffix == ".jsonl":
            [json.loads(line) for line in raw.decode().splitlines()]
