"""Resuming continues bit-for-bit, checkpoints are atomic and self-describing, resume refuses other settings."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from hairdiff.core.errors import RunDirError
from hairdiff.model.checkpoints import latest_checkpoint, list_checkpoints
from hairdiff.model.trained import load_head
from hairdiff.train.checkpoint import load_checkpoint, save_checkpoint
from hairdiff.train.loop import train
from hairdiff.train.optim import build_optimizer
from tests.fixtures.cli import invoke
from tests.fixtures.stores import TINY, log_rows, toy_train_config
from tests.fixtures.stores import make_train_store as make_store

VOLATILE = {"time", "images_per_s", "data_wait_s"}  # wall-clock figures differ between any two runs


def _run(store, run, **kw):
    return train(toy_train_config(store, run, **{"batch_size": 2, "lr": 1e-3, "seed": 5, "ckpt_every": 3, **kw}),
                 device="cpu")


def test_resume_is_bit_for_bit(tmp_path):
    store = make_store(tmp_path, n=8)
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    _run(store, straight, iters=6)
    stopped = _run(store, broken, iters=6, stop_at=3)
    assert not stopped["finished"] and not (broken / "run.json").exists()
    assert latest_checkpoint(broken).name == "iter_00000003"
    # Rows logged after the checkpoint by a run killed later are dropped and recomputed on resume.
    with open(broken / "log.jsonl", "a") as f:
        f.write(json.dumps({"iter": 4, "loss": 123.0}) + "\n")
    resumed = _run(store, broken, iters=6, resume=True)
    assert resumed["started_at_iteration"] == 3 and resumed["finished"]

    a, b = log_rows(straight), log_rows(broken)
    assert [r["iter"] for r in b] == list(range(1, 7))
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if k not in VOLATILE} == {k: v for k, v in rb.items() if k not in VOLATILE}
    wa, wb = load_file(str(straight / "head.safetensors")), load_file(str(broken / "head.safetensors"))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # The weights really changed during training (the comparison is not trivially true).
    first = load_file(str(tmp_path / "broken" / "checkpoints" / "iter_00000003" / "model.safetensors"))
    assert any(not torch.equal(first[k], wa[k]) for k in wa)


def test_resume_refuses_other_settings_and_finished_runs_are_left_alone(tmp_path):
    store = make_store(tmp_path, n=4)
    run = tmp_path / "run"
    _run(store, run, iters=4, stop_at=3)
    with pytest.raises(RunDirError, match="lr"):
        _run(store, run, iters=4, lr=5e-4, resume=True)
    with pytest.raises(RunDirError, match="head num_points: checkpoint 256 vs now 128"):  # the field, not two dicts
        _run(store, run, iters=4, resume=True, head=[f"{k}={v}" for k, v in {**TINY, "num_points": 128}.items()])
    _run(store, run, iters=4, resume=True)
    before = (run / "head.safetensors").read_bytes()
    again = _run(store, run, iters=4, resume=True)
    assert again["iterations"] == 4 and (run / "head.safetensors").read_bytes() == before


def test_checkpoint_round_trip_and_atomicity(tmp_path):
    store = make_store(tmp_path, n=4)
    run = tmp_path / "run"
    _run(store, run, iters=6, stop_at=5)
    ckpts = list_checkpoints(run)
    assert [p.name for p in ckpts] == ["iter_00000003", "iter_00000005"]  # the newest two are kept
    # A checkpoint being written when the process died is a hidden temp folder: never taken as latest.
    partial = run / "checkpoints" / ".tmp-iter_00000009-999"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"torn")
    assert latest_checkpoint(run).name == "iter_00000005"

    head, meta = load_head(run)  # interrupted run: weights from the latest checkpoint
    assert meta["iteration"] == 5
    opt = build_optimizer(head, lr=1.0, weight_decay=0.05)
    state = load_checkpoint(ckpts[-1], head, opt)
    assert state["data_position"] == {"epoch": 2, "offset": 2}  # 5 batches of 2 over 4 samples
    assert opt.param_groups[0]["betas"] == (0.9, 0.999)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    saved = opt.state_dict()
    # Save and load again: optimizer state and weights come back exactly.
    again = save_checkpoint(tmp_path / "copy", iteration=5, model=head, optimizer=opt,
                            position=state["data_position"], config=state["config"], meta=meta)
    head2, _ = load_head(run)
    opt2 = build_optimizer(head2, lr=1.0, weight_decay=0.05)
    load_checkpoint(again, head2, opt2)
    s2 = opt2.state_dict()
    for pid, st in saved["state"].items():
        for k, v in st.items():
            assert torch.equal(v, s2["state"][pid][k])
    for p1, p2 in zip(head.state_dict().values(), head2.state_dict().values()):
        assert torch.equal(p1, p2)


def test_resuming_a_checkpoint_with_one_optimizer_group_is_one_line(tmp_path):
    """Checkpoints written before weight decay was split hold one parameter group: a clear refusal, no traceback."""
    store = make_store(tmp_path, n=4)
    run = tmp_path / "run"
    _run(store, run, iters=4, stop_at=2)
    ckpt = latest_checkpoint(run)
    head, meta = load_head(run)
    old = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.05)  # the optimizer of earlier versions
    state = json.loads((ckpt / "state.json").read_text())
    save_checkpoint(run, iteration=2, model=head, optimizer=old, position=state["data_position"],
                    config=state["config"], meta=meta)
    code, _, err = invoke("train", "--cache", store, "--out", run, "--iters", "4", "--batch-size", "2", "--lr", "1e-3",
                          "--seed", "5", "--ckpt-every", "3", "--device", "cpu", "--resume", "--no-progress",
                          "--no-small", *[f"--head={k}={v}" for k, v in TINY.items()])
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert "1 parameter group" in errors[0] and "--overwrite" in errors[0], err


def test_resume_reads_a_missing_head_field_as_its_legacy_value(tmp_path):
    """A checkpoint config written before a HeadConfig field existed lacks it: that means the LEGACY value."""
    from hairdiff.model.mask2former.head import LEGACY

    store = make_store(tmp_path, n=4)
    run = tmp_path / "run"
    legacy_head = [f"{k}={v}" for k, v in TINY.items()] + [f"{k}={json.dumps(v)}" for k, v in LEGACY.items()]
    _run(store, run, iters=4, stop_at=3, head=legacy_head)
    path = latest_checkpoint(run) / "state.json"
    state = json.loads(path.read_text())
    for k in LEGACY:
        del state["config"]["head_config"][k]
    path.write_text(json.dumps(state))
    assert _run(store, run, iters=4, resume=True, head=legacy_head)["finished"]
