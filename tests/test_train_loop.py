"""`pipeline train` on small real feature stores: the loss falls, logs/curves/run.json are written, bad
input (mismatched stores, an occupied run folder, inf features) stops with a clear error, and nothing in
a run folder is a pickle."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from safetensors import safe_open
from typer.testing import CliRunner

from cache import FeatureStore, fingerprint
from cache.geometry import preprocessing_record
from cache.levels import LevelSpec
from train.checkpoint import latest_checkpoint, load_head
from train.commands import train_command
from train.data import CachedFeatures, Position, StoreMismatchError, global_batch
from train.loop import RunDirError, TrainingDiverged, train

R = 32
LEVELS = [LevelSpec("up_blocks.1", 16, 8, 2, 2), LevelSpec("up_blocks.2", 8, 8, 4, 4),
          LevelSpec("up_blocks.3", 4, 8, 8, 8)]
# A tiny head: seconds per run on a shared 2-core CPU.
TINY = {"hidden_dim": 32, "num_queries": 8, "nheads": 4, "dim_feedforward": 64, "dec_layers": 2,
        "enc_layers": 1, "mask_dim": 32, "num_points": 256}


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread: on a shared 2-core machine more threads only spin against each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def hair_label(rng: np.random.Generator) -> np.ndarray:
    """An ellipse of hair on background, with the bottom rows ignored (like letterbox padding)."""
    yy, xx = np.mgrid[:R, :R]
    cy, cx = rng.uniform(8, 20, 2)
    ry, rx = rng.uniform(4, 10, 2)
    lab = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1).astype(np.uint8)
    lab[R - rng.integers(0, 6):] = 255
    return lab


def features_for(label: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Features that linearly encode the label (channel 0 = hair fraction of the cell) plus noise."""
    hair = (label == 1).astype(np.float32)
    out = {}
    for lv in LEVELS:
        frac = hair.reshape(lv.height, lv.stride, lv.width, lv.stride).mean(axis=(1, 3))
        f = rng.normal(0, 0.3, (lv.channels, lv.height, lv.width)).astype(np.float32)
        f[0] += 4 * frac - 2
        f[1] -= 4 * frac - 2
        out[lv.name] = f
    return out


def make_store(tmp: Path, name: str = "toy", n: int = 12, seed: int = 0, model: str = "toy-encoder",
               bad: tuple[int, ...] = ()) -> str:
    """A real FeatureStore with n finished samples; samples in `bad` get +inf features."""
    rng = np.random.default_rng(seed)
    inputs = {"model": model, "levels": [lv.name for lv in LEVELS], "preprocessing": preprocessing_record(R)}
    fp = fingerprint(inputs)
    url = str(tmp / f"{name}.zarr")
    ids = [f"{name}{i:03d}" for i in range(n)]
    store = FeatureStore.create_or_open(url, fingerprint=fp, fingerprint_inputs=inputs, dataset=name,
                                        split="train", root=str(tmp), ids=ids, levels=LEVELS, resolution=R,
                                        preprocessing=preprocessing_record(R), shard_size=4)
    for s in range(0, n, 4):
        idx = list(range(s, min(n, s + 4)))
        labels = [hair_label(rng) for _ in idx]
        feats = [features_for(lab, rng) for lab in labels]
        for j, i in enumerate(idx):
            if i in bad:
                for f in feats[j].values():
                    f[:] = np.inf
        store.write_samples(idx, {lv.name: np.stack([f[lv.name] for f in feats]) for lv in LEVELS},
                            np.stack(labels), labels, np.full((len(idx), 2), R))
    return url


def log_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_loss_falls_and_run_is_complete(tmp_path):
    store = make_store(tmp_path)
    run = tmp_path / "run"
    summary = train([store], run, iters=40, batch_size=4, lr=1e-3, seed=0, device="cpu", ckpt_every=20,
                    head_config=TINY, progress=False)
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
        train([a, b], tmp_path / "run", iters=1, batch_size=2, device="cpu", head_config=TINY, progress=False)
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
    train([store], run, iters=2, batch_size=2, device="cpu", ckpt_every=1, head_config=TINY, progress=False)
    with pytest.raises(RunDirError, match="--resume"):
        train([store], run, iters=2, batch_size=2, device="cpu", head_config=TINY, progress=False)
    train([store], run, iters=1, batch_size=2, device="cpu", overwrite=True, head_config=TINY, progress=False)
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
    app = typer.Typer()
    app.command()(train_command)
    res = CliRunner().invoke(app, ["--cache", store, "--out", str(run), "--iters", "20", "--batch-size", "2",
                                   "--device", "cpu", "--ckpt-every", "1", "--no-progress",
                                   *[f"--head={k_}={v}" for k_, v in TINY.items()]])
    assert res.exit_code == 3, res.output
    assert f"non-finite loss at iteration {k}" in res.output
    assert not (run / "head.safetensors").exists() and not (run / "run.json").exists()
    assert [r["iter"] for r in log_rows(run)] == list(range(1, k))
    if k > 1:
        assert latest_checkpoint(run).name == f"iter_{k - 1:08d}"
        _, meta = load_head(run)
        assert meta["iteration"] == k - 1
    with pytest.raises(TrainingDiverged):
        train([store], tmp_path / "run2", iters=20, batch_size=2, device="cpu", head_config=TINY, progress=False)


def test_run_folder_holds_no_pickle(tmp_path):
    store = make_store(tmp_path, n=4)
    run = tmp_path / "run"
    train([store], run, iters=4, batch_size=2, device="cpu", ckpt_every=2, stop_at=3, head_config=TINY,
          progress=False)
    train([store], run, iters=4, batch_size=2, device="cpu", ckpt_every=2, resume=True, head_config=TINY,
          progress=False)
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
