"""`pipeline eval` on real feature stores and a real (random-weight) head saved the way training saves it."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import typer
from PIL import Image
from typer.testing import CliRunner

from cache import FeatureStore, StoreMismatchError, fingerprint
from cache.geometry import letterbox_label, preprocessing_record
from cache.levels import LevelSpec
from evaluate.commands import eval_command
from evaluate.metrics import confusion_matrix, scores
from evaluate.run import evaluate_run, to_annotation
from train.checkpoint import head_config_to_dict, load_head, write_final
from train.head import HeadConfig, Mask2FormerHead, semantic_probs

R = 32
LEVELS = [LevelSpec("up_blocks.1", 16, 8, 2, 2), LevelSpec("up_blocks.2", 8, 8, 4, 4),
          LevelSpec("up_blocks.3", 4, 8, 8, 8)]
TINY = HeadConfig(hidden_dim=32, num_queries=8, nheads=4, dim_feedforward=64, dec_layers=2, enc_layers=1,
                  mask_dim=32, num_points=256)
INPUTS = {"model": {"kind": "toy", "name": "toy-encoder"}, "taps": [lv.name for lv in LEVELS],
          "preprocessing": preprocessing_record(R)}


def ellipse(h, w, rng) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    cy, cx, ry, rx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, rng.uniform(0.15, 0.4) * h, \
        rng.uniform(0.15, 0.4) * w
    return (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1).astype(np.uint8)


def make_store(tmp: Path, dataset: str, samples: list[tuple[str, tuple[int, int], np.ndarray]], root: str,
               done: list[int] | None = None, inputs: dict = INPUTS, split: str = "test") -> str:
    """samples: (id, original image size, label at the annotation's own size). Random features."""
    rng = np.random.default_rng(0)
    url = str(tmp / f"{dataset}-{split}.zarr")
    store = FeatureStore.create_or_open(url, fingerprint=fingerprint(inputs), fingerprint_inputs=inputs,
                                        dataset=dataset, split=split, root=root, ids=[s[0] for s in samples],
                                        levels=LEVELS, resolution=R, preprocessing=preprocessing_record(R),
                                        shard_size=2)
    for i in (range(len(samples)) if done is None else done):
        _, size, label = samples[i]
        feats = {lv.name: rng.normal(0, 1, (1, lv.channels, lv.height, lv.width)).astype(np.float32) for lv in LEVELS}
        store.write_samples([i], feats, letterbox_label(label, R)[None], [label], np.array([size]))
    return url


def make_run(tmp: Path, trained_on: str = "figaro", inputs: dict = INPUTS) -> Path:
    torch.manual_seed(0)
    head = Mask2FormerHead(LEVELS, TINY)
    meta = {"fingerprint": fingerprint(inputs), "fingerprint_inputs": inputs,
            "levels": [vars(lv) for lv in LEVELS], "head_config": head_config_to_dict(TINY), "iteration": 0,
            "stores": [{"dataset": trained_on, "split": "train", "fingerprint": fingerprint(inputs), "url": "x"}]}
    run = tmp / "run"
    run.mkdir()
    write_final(run, head, {"meta": meta})
    return run


def synthetic_samples(n=5):
    rng = np.random.default_rng(3)
    # CelebAMask-like: the annotation has half the image's resolution; non-square, odd sizes.
    sizes = [(64, 48), (50, 70), (40, 40), (37, 61), (80, 30)]
    return [(f"{i:05d}", sizes[i], ellipse(sizes[i][0] // 2, sizes[i][1] // 2, rng)) for i in range(n)]


def independent_confusion(run: Path, url: str) -> tuple[np.ndarray, int]:
    """The chain written out again: head -> probs at R -> crop the valid region -> resize -> argmax."""
    head, _ = load_head(run)
    store = FeatureStore.open(url)
    conf, n = np.zeros((2, 2), np.int64), 0
    for i in np.flatnonzero(store.done_mask()):
        s = store.read_sample(int(i))
        label = store.read_label(int(i))
        with torch.no_grad():
            out = head({k: torch.from_numpy(v[None].astype(np.float32)) for k, v in s["features"].items()})
            p = F.interpolate(semantic_probs(out), size=(R, R), mode="bilinear", align_corners=False)
        h, w = s["orig_size"]
        nh, nw = round(h * R / max(h, w)), round(w * R / max(h, w))
        p = F.interpolate(p[:, :, :nh, :nw], size=label.shape, mode="bilinear", align_corners=False)
        pred = p[0].argmax(0).numpy()
        keep = label != 255
        for g in (0, 1):
            for q in (0, 1):
                conf[g, q] += int(((label == g) & (pred == q) & keep).sum())
        n += 1
    return conf, n


def test_eval_scores_done_samples_at_annotation_resolution(tmp_path):
    samples = synthetic_samples()
    url = make_store(tmp_path, "celebamask", samples, root=str(tmp_path / "nowhere"), done=[0, 1, 3, 4])
    run = make_run(tmp_path, trained_on="figaro")
    out = tmp_path / "eval"
    m = evaluate_run(run, url, out, num_overlays=2, progress=False, batch_size=3)

    conf, n = independent_confusion(run, url)
    assert n == 4 and m["images"] == 4  # sample 2 was never extracted: not scored
    assert m["confusion_matrix"] == conf.tolist()
    assert conf.sum() == sum(int((s[2] != 255).sum()) for k, s in enumerate(samples) if k != 2)
    want = scores(conf)
    for k in ("mIoU", "accuracy", "precision", "f1", "hair_iou"):
        assert m[k] == want[k] or (math.isnan(m[k]) and math.isnan(want[k]))

    saved = json.loads((out / "metrics.json").read_text())
    for k in ("mIoU", "accuracy", "precision", "f1", "hair_iou", "hair_f1", "boundary_f", "mean_class_accuracy",
              "run", "store", "fingerprint", "images", "cross_dataset"):
        assert k in saved, k
    assert saved["cross_dataset"] is True and saved["trained_on"] == ["figaro"]
    assert saved["fingerprint"] == fingerprint(INPUTS) and saved["store"].endswith("celebamask-test.zarr")
    md = (out / "metrics.md").read_text()
    assert "Cross-dataset" in md and "92.58" in md  # the paper's CelebAMask-HQ row sits beside ours
    per_image = json.loads((out / "per_image.json").read_text())
    assert sorted(p["id"] for p in per_image) == ["00000", "00001", "00003", "00004"]
    pngs = sorted(p.name for p in (out / "overlays").iterdir())
    assert len(pngs) == 4 and sum(p.startswith("best_") for p in pngs) == 2
    # root unreadable: masks drawn on grey at the annotation's size
    worst = per_image and min(per_image, key=lambda p: p["mIoU"])
    img = np.asarray(Image.open(next((out / "overlays").glob(f"worst_0_{worst['id']}.png"))))
    assert img.shape[:2] == samples[int(worst["id"])][2].shape


def test_eval_refuses_a_store_with_another_fingerprint(tmp_path):
    other = {**INPUTS, "prompt": "A photo of a cat."}
    url = make_store(tmp_path, "figaro", synthetic_samples(2), root=str(tmp_path), inputs=other)
    run = make_run(tmp_path)
    with pytest.raises(StoreMismatchError, match="fingerprint"):
        evaluate_run(run, url, tmp_path / "eval", progress=False)
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_unletterbox_of_a_perfect_store_map_recovers_the_annotation():
    """If the head predicted the letterboxed label exactly, evaluation must score ~100% at full size."""
    rng = np.random.default_rng(5)
    for h, w in [(64, 48), (37, 61), (80, 30)]:
        label = ellipse(h, w, rng)
        boxed = letterbox_label(label, 64)
        onehot = torch.from_numpy(np.stack([boxed == 0, boxed == 1]).astype(np.float32))
        pred = to_annotation(onehot, (h, w), (h, w))
        s = scores(confusion_matrix(pred, label))
        assert s["accuracy"] > 97 and s["hair_iou"] > 90, (h, w, s)


def test_eval_on_real_figaro_draws_on_the_real_image_and_cli_prints_path_last(tmp_path, figaro_root):
    from extract.readers import get_reader

    reader = get_reader("figaro")
    refs = reader.list_samples(figaro_root, "Training", None)[:3]
    loaded = [reader.load(r) for r in refs]
    samples = [(s.id, s.image.shape[:2], s.label) for s in loaded]
    url = make_store(tmp_path, "figaro", samples, root=str(figaro_root), split="Training")
    run = make_run(tmp_path, trained_on="figaro")
    out = tmp_path / "eval"
    app = typer.Typer()
    app.command()(eval_command)
    res = CliRunner().invoke(app, ["--run", str(run), "--cache", url, "--out", str(out), "--device", "cpu",
                                   "--overlays", "1"])
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1] == str(out / "metrics.json")
    m = json.loads((out / "metrics.json").read_text())
    assert m["cross_dataset"] is False and m["images"] == 3
    assert "95.40" in (out / "metrics.md").read_text()  # the paper's Figaro row
    best = next((out / "overlays").glob("best_0_*.png"))
    sid = best.stem.split("_", 2)[2]
    img = np.asarray(Image.open(best)).astype(int)
    orig = next(s for s in loaded if s.id == sid)
    assert img.shape == orig.image.shape
    # the photo shows through the tints (a grey base would not follow the photo's brightness)
    assert np.corrcoef(img.mean(2).ravel(), orig.image.mean(2).ravel())[0, 1] > 0.5
