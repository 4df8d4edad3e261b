"""Issue 26, class 5: a head that is not finite is never kept, and never used.

A step can leave the weights non-finite while the loss and gradient norm it read (computed before the update)
were finite: `--lr 1e38 --iters 1` did, and exited 0 with every value of head.safetensors non-finite; with
--val the same weights became RUN/best/, and a later divergence named them "the last good checkpoint".
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hairdiff.core.errors import TrainingDiverged
from hairdiff.model.best import save_best
from hairdiff.model.mask2former.head import Mask2FormerHead
from hairdiff.model.trained import write_final
from hairdiff.train.checkpoint import save_checkpoint
from hairdiff.train.loop import train
from tests.fixtures.cli import invoke
from tests.fixtures.stores import LEVELS, TINY, TINY_HEAD, make_run, make_train_store, toy_train_config

HEAD = [f"--head={k}={v}" for k, v in TINY.items()]


def _poison(weights: Path) -> None:
    """One NaN in a head's file, as a diverged training (of an older version) left it."""
    sd = load_file(str(weights))
    name = next(iter(sd))
    sd[name] = sd[name].clone()
    sd[name].view(-1)[0] = float("nan")
    save_file(sd, str(weights))


def test_weights_made_non_finite_by_the_last_update_stop_the_run_and_nothing_is_written(tmp_path):
    store = make_train_store(tmp_path, n=4)
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"weights became non-finite by iteration 1 \((\d|,)+ of"):
        train(toy_train_config(store, run, iters=1, batch_size=2, lr=1e38, workers=0), device="cpu")
    assert not (run / "head.safetensors").exists() and not (run / "run.json").exists()
    assert not (run / "checkpoints").exists()


def test_with_val_no_best_head_and_no_checkpoint_holds_non_finite_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    store, val = make_train_store(tmp_path, "toy", n=4), make_train_store(tmp_path, "val", n=2, seed=1)
    run = tmp_path / "run"
    code, _, err = invoke("train", "--cache", store, "--out", run, "--val", val, "--val-every", "1", "--iters", "2",
                          "--ckpt-every", "1", "--lr", "1e38", "--batch-size", "2", "--device", "cpu", "--no-small",
                          "--workers", "0", "--no-progress", *HEAD)
    assert code == 3 and err.strip().splitlines()[-1].startswith("error: the head's weights became non-finite"), err
    assert "Traceback" not in err and not (run / "best").exists() and not (run / "checkpoints").exists()


def test_every_writer_refuses_a_non_finite_head(tmp_path):
    head = Mask2FormerHead(LEVELS, TINY_HEAD)
    with torch.no_grad():
        next(head.parameters()).view(-1)[0] = float("inf")
    with pytest.raises(TrainingDiverged, match="non-finite values"):
        save_best(tmp_path, head, iteration=1, metrics={"mIoU": 0.5}, meta={})
    with pytest.raises(TrainingDiverged, match="non-finite values"):
        write_final(tmp_path, head, {"meta": {}})
    with pytest.raises(TrainingDiverged, match="non-finite values"):
        save_checkpoint(tmp_path, iteration=1, model=head, optimizer=torch.optim.AdamW(head.parameters()),
                        position={}, config={}, meta={})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_eval_and_predict_refuse_a_non_finite_head_in_one_line(command, tmp_path):
    from PIL import Image

    run = make_run(tmp_path)
    _poison(run / "head.safetensors")
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")
    args = (["eval", "--run", run, "--cache", make_train_store(tmp_path, n=2), "--out", tmp_path / "eval"]
            if command == "eval" else ["predict", tmp_path / "photo.png", "--run", run, "--out", tmp_path / "pred"])
    code, _, err = invoke(*args, "--device", "cpu")
    errors = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert code == 2 and errors == [err.strip().splitlines()[-1]] and "Traceback" not in err, err
    assert f"error: {run / 'head.safetensors'} holds 1 non-finite values of" in err and "diverged" in err
    assert not (tmp_path / "eval").exists() and not (tmp_path / "pred").exists()


def test_resume_refuses_a_non_finite_checkpoint(tmp_path):
    store = make_train_store(tmp_path, n=4)
    run = tmp_path / "run"
    train(toy_train_config(store, run, iters=2, batch_size=2, stop_at=1, ckpt_every=1, workers=0), device="cpu")
    _poison(run / "checkpoints" / "iter_00000001" / "model.safetensors")
    code, _, err = invoke("train", "--cache", store, "--out", run, "--iters", "2", "--batch-size", "2", "--ckpt-every",
                          "1", "--resume", "--device", "cpu", "--no-small", "--workers", "0", "--no-progress", *HEAD)
    assert code == 2 and "iter_00000001/model.safetensors holds 1 non-finite values" in err, err
