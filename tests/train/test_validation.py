"""`pipeline train --val`: validation scores in log.jsonl and curves.png, RUN/best/, and eval preferring it."""
from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from hairdiff.core.errors import UsageError
from hairdiff.model.best import read_best
from hairdiff.train.loop import train
from tests.fixtures.cli import invoke
from tests.fixtures.stores import TINY, log_rows, make_train_store, toy_train_config

TRAIN_ARGS = ("--batch-size", "4", "--lr", "1e-3", "--device", "cpu", "--no-progress", "--no-small",
              *[f"--head={k}={v}" for k, v in TINY.items()])


def test_validation_is_logged_best_is_kept_and_eval_uses_it(tmp_path):
    store = make_train_store(tmp_path, "train", n=8, seed=0)
    val = make_train_store(tmp_path, "val", n=5, seed=9)  # same extraction settings, other samples
    run = tmp_path / "run"
    code, out, err = invoke("train", "--cache", store, "--val", val, "--val-every", "3", "--iters", "8", "--out", run,
                            *TRAIN_ARGS)
    assert code == 0, err
    rows = log_rows(run)
    scored = [r for r in rows if "val_mIoU" in r]
    assert [r["iter"] for r in scored] == [3, 6, 8]  # every 3 and at the end
    for key in ("val_mIoU", "val_accuracy", "val_precision", "val_f1", "val_hair_iou", "val_boundary_f"):
        assert all(isinstance(r[key], float) for r in scored), key
    assert len({r["val_mIoU"] for r in scored}) > 1  # the head changed between validations

    best = read_best(run)
    top = max(r["val_mIoU"] for r in scored)
    assert best["score"] == top and best["iteration"] == next(r["iter"] for r in scored if r["val_mIoU"] == top)
    assert best["meta"]["iteration"] == best["iteration"] and best["meta"]["fingerprint"]
    assert [p.name for p in (run / "best").glob("*.safetensors")] == [f"head_{best['iteration']:08d}.safetensors"]
    assert json.loads((run / "run.json").read_text())["best"]["iteration"] == best["iteration"]
    assert f"best val mIoU {top:.2f}" in out
    assert Image.open(run / "curves.png").size[0] > 1500  # a third column: the validation panel

    # eval prefers the best head, says so on stderr and in metrics.json, and scores it as training did.
    code, _, err = invoke("eval", "--run", run, "--cache", val, "--out", tmp_path / "eval", "--device", "cpu",
                          "--overlays", "0")
    assert code == 0, err
    assert "best validated head" in err and f"iteration {best['iteration']}" in err
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert m["head"]["source"] == "best" and m["head"]["iteration"] == best["iteration"]
    assert m["mIoU"] == pytest.approx(best["score"], abs=1e-9)
    # --no-best: the final head, which the last validation scored.
    code, _, err = invoke("eval", "--run", run, "--cache", val, "--out", tmp_path / "final", "--device", "cpu",
                          "--overlays", "0", "--no-best")
    assert code == 0 and "best validated" not in err, err
    final = json.loads((tmp_path / "final" / "metrics.json").read_text())
    assert final["head"]["source"] == "final" and final["mIoU"] == pytest.approx(scored[-1]["val_mIoU"], abs=1e-9)


def test_validation_store_must_match_and_needs_a_scorer(tmp_path):
    store = make_train_store(tmp_path, "train", n=4)
    other = make_train_store(tmp_path, "other", n=4, model="another-encoder")
    code, _, err = invoke("train", "--cache", store, "--val", other, "--iters", "2", "--out", tmp_path / "run",
                          *TRAIN_ARGS)
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "--val" in errors[0] and "fingerprint" in errors[0], err
    assert not (tmp_path / "run").exists()
    with pytest.raises(UsageError, match="--val"):  # the library loop cannot import evaluate to score it itself
        train(toy_train_config(store, tmp_path / "lib", iters=1, batch_size=2, val=store), device="cpu")


def test_a_resumed_run_validates_as_an_uninterrupted_one_and_keeps_the_best_it_had(tmp_path):
    store = make_train_store(tmp_path, "train", n=8, seed=0)
    val = make_train_store(tmp_path, "val", n=4, seed=9)
    common = ("--cache", store, "--val", val, "--val-every", "2", "--iters", "6", "--ckpt-every", "2", "--seed", "3",
              *TRAIN_ARGS)
    assert invoke("train", "--out", tmp_path / "straight", *common)[0] == 0
    assert invoke("train", "--out", tmp_path / "broken", "--stop-at", "4", *common)[0] == 0
    assert read_best(tmp_path / "broken")["iteration"] <= 4
    # A copy of the stopped run whose best so far scored higher than any later validation can (mIoU <= 100).
    shutil.copytree(tmp_path / "broken", tmp_path / "high")
    record = json.loads((tmp_path / "high" / "best" / "best.json").read_text())
    (tmp_path / "high" / "best" / "best.json").write_text(json.dumps({**record, "score": 101.0}))
    for name in ("broken", "high"):
        code, _, err = invoke("train", "--out", tmp_path / name, "--resume", *common)
        assert code == 0, err
    a, b = log_rows(tmp_path / "straight"), log_rows(tmp_path / "broken")
    assert [r.get("val_mIoU") for r in a] == [r.get("val_mIoU") for r in b]
    assert read_best(tmp_path / "straight")["iteration"] == read_best(tmp_path / "broken")["iteration"]
    kept = read_best(tmp_path / "high")
    assert (kept["iteration"], kept["score"]) == (record["iteration"], 101.0)
