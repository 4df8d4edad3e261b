"""`pipeline eval` on real feature stores and a real (random-weight) head saved the way training saves it."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hairdiff.cache import FeatureStore, StoreMismatchError, fingerprint
from hairdiff.cache.geometry import letterbox_label
from hairdiff.evaluate.config import EvalConfig
from hairdiff.evaluate.metrics import confusion_matrix, scores
from hairdiff.evaluate.run import evaluate_run, to_annotation
from hairdiff.model.mask2former.head import LEGACY, semantic_probs
from hairdiff.model.trained import load_head
from tests.fixtures.cli import invoke
from tests.fixtures.stores import INPUTS, LEVELS, TINY_HEAD, R, ellipse, make_run, synthetic_samples
from tests.fixtures.stores import make_eval_store as make_store


def independent_confusion(run: Path, url: str, each: list | None = None) -> tuple[np.ndarray, int]:
    """The chain written out again: head -> probs at R -> crop the valid region -> resize -> argmax.
    each: a list that receives every image's own confusion matrix."""
    head, _ = load_head(run)
    store = FeatureStore.open(url)
    conf, n = np.zeros((2, 2), np.int64), 0
    for i in np.flatnonzero(store.done_mask()):
        s = store.read_sample(int(i))
        label = store.read_label(int(i))
        with torch.no_grad():
            out = head({k: torch.from_numpy(v[None].astype(np.float32)) for k, v in s["features"].items()})
            # Mask logits to the store resolution first, then sigmoid and the class mix (Mask2Former's order).
            masks = F.interpolate(out["pred_masks"], size=(R, R), mode="bilinear", align_corners=False)
            p = semantic_probs(out["pred_logits"], masks)
        h, w = s["orig_size"]
        nh, nw = round(h * R / max(h, w)), round(w * R / max(h, w))
        p = F.interpolate(p[:, :, :nh, :nw], size=label.shape, mode="bilinear", align_corners=False)
        pred = p[0].argmax(0).numpy()
        keep = label != 255
        mine = np.zeros((2, 2), np.int64)
        for g in (0, 1):
            for q in (0, 1):
                mine[g, q] = int(((label == g) & (pred == q) & keep).sum())
        conf += mine
        if each is not None:
            each.append(mine)
        n += 1
    return conf, n


def test_eval_scores_done_samples_at_annotation_resolution(tmp_path):
    samples = synthetic_samples()
    url = make_store(tmp_path, "celebamask", samples, root=str(tmp_path / "nowhere"), done=[0, 1, 3, 4])
    run = make_run(tmp_path, trained_on="figaro")
    out = tmp_path / "eval"
    m = evaluate_run(EvalConfig(run=run, cache=url, out=out, overlays=2, batch_size=3, device="cpu"))

    each = []
    conf, n = independent_confusion(run, url, each)
    assert n == 4 and m["images"] == 4  # sample 2 was never extracted: not scored
    assert m["confusion_matrix"] == conf.tolist()
    assert conf.sum() == sum(int((s[2] != 255).sum()) for k, s in enumerate(samples) if k != 2)
    want = scores(conf)  # pooled: the top-level keys, as they always were
    for k in ("mIoU", "accuracy", "precision", "f1", "hair_iou"):
        assert m[k] == want[k] or (math.isnan(m[k]) and math.isnan(want[k]))
    # per-image reading: every image's own metrics, then their mean over images
    assert m["per_image_mean"]["images"] == 4
    for k in ("mIoU", "accuracy", "precision", "f1"):
        assert m["per_image_mean"][k] == pytest.approx(np.nanmean([scores(c)[k] for c in each]), abs=1e-9), k
    assert m["per_image_mean"]["mIoU"] != pytest.approx(m["mIoU"], abs=1e-6)  # the two readings differ here
    assert set(m["readings"]) == {"pooled", "per_image_mean"}

    saved = json.loads((out / "metrics.json").read_text())
    for k in ("mIoU", "accuracy", "precision", "f1", "hair_iou", "hair_f1", "boundary_f", "mean_class_accuracy",
              "run", "store", "fingerprint", "images", "cross_dataset"):
        assert k in saved, k
    assert saved["cross_dataset"] is True and saved["trained_on"] == ["figaro"]
    assert saved["evaluated_on_training_store"] is False and saved["random_weight_backbone"] is False
    assert saved["fingerprint"] == fingerprint(INPUTS) and saved["store"].endswith("celebamask-test.zarr")
    md = (out / "metrics.md").read_text()
    assert "Cross-dataset" in md and "92.58" in md  # the paper's CelebAMask-HQ row sits beside ours
    # each value with its 95% interval (tests/evaluate/test_compare.py checks them)
    assert f"| pooled | {m['mIoU']:.2f} [" in md and f"| per-image mean | {m['per_image_mean']['mIoU']:.2f} [" in md
    assert "implies mIoU >= " in md  # CelebAMask-HQ's paper row: 92.58 with F1 97.79 is not one reading
    assert "training data" not in md and "random-weight" not in md
    assert "green = hair found, red = hair predicted where there is none, blue = hair missed" in md
    per_image = json.loads((out / "per_image.json").read_text())
    assert sorted(p["id"] for p in per_image) == ["00000", "00001", "00003", "00004"]
    pngs = sorted(p.name for p in (out / "overlays").iterdir())
    assert len(pngs) == 4 and sum(p.startswith("best_") for p in pngs) == 2
    # root unreadable: masks drawn on grey at the annotation's size
    worst = per_image and min(per_image, key=lambda p: p["mIoU"])
    img = np.asarray(Image.open(next((out / "overlays").glob(f"worst_0_{worst['id']}.png"))))
    h, w = samples[int(worst["id"])][2].shape
    assert img.shape[0] > h and img.shape[1] >= w  # the picture, then the colour key under it


def test_a_run_from_before_mask_stride_and_stride_range_still_evaluates(tmp_path):
    """Its run.json lacks both fields: the head it trained (mask features at its finest stride, 8 here, no
    learned upsampling) is rebuilt, and its weights load strictly."""
    def written_before(meta):
        for k in LEGACY:
            del meta["head_config"][k]

    run = make_run(tmp_path, levels=LEVELS[:2], head_cfg=dataclasses.replace(TINY_HEAD, **LEGACY), edit=written_before)
    assert not set(LEGACY) & set(json.loads((run / "run.json").read_text())["meta"]["head_config"])
    head, _ = load_head(run)
    assert head.output_stride == 8 and len(head.pixel_decoder.mask_upsample) == 0
    url = make_store(tmp_path, "figaro", synthetic_samples(3), root=str(tmp_path))
    m = evaluate_run(EvalConfig(run=run, cache=url, out=tmp_path / "eval", overlays=0, device="cpu"))
    assert m["images"] == 3 and m["head"]["source"] == "final"
    assert m["confusion_matrix"] == independent_confusion(run, url)[0].tolist()


def test_eval_refuses_a_store_with_another_fingerprint(tmp_path):
    other = {**INPUTS, "prompt": "A photo of a cat."}
    url = make_store(tmp_path, "figaro", synthetic_samples(2), root=str(tmp_path), inputs=other)
    run = make_run(tmp_path)
    with pytest.raises(StoreMismatchError, match="fingerprint"):
        evaluate_run(EvalConfig(run=run, cache=url, out=tmp_path / "eval", device="cpu"))
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
    from hairdiff.extract.readers.registry import get_reader

    reader = get_reader("figaro")
    refs = reader.list_samples(figaro_root, "Training", None)[:3]
    loaded = [reader.load(r) for r in refs]
    samples = [(s.id, s.image.shape[:2], s.label) for s in loaded]
    url = make_store(tmp_path, "figaro", samples, root=str(figaro_root), split="Training")
    run = make_run(tmp_path, trained_on="figaro")
    out = tmp_path / "eval"
    code, stdout, err = invoke("eval", "--run", run, "--cache", url, "--out", out, "--device", "cpu", "--overlays", "1")
    assert code == 0, err
    assert stdout.strip().splitlines()[-1] == str(out / "metrics.json")
    m = json.loads((out / "metrics.json").read_text())
    assert m["cross_dataset"] is False and m["images"] == 3
    assert "95.40" in (out / "metrics.md").read_text()  # the paper's Figaro row
    best = next((out / "overlays").glob("best_0_*.png"))
    sid = best.stem.split("_", 2)[2]
    img = np.asarray(Image.open(best)).astype(int)
    orig = next(s for s in loaded if s.id == sid)
    h, w = orig.image.shape[:2]
    assert img.shape[1] == w and img.shape[0] > h  # the key strip under the picture
    img = img[:h]
    # the photo shows through the tints (a grey base would not follow the photo's brightness)
    assert np.corrcoef(img.mean(2).ravel(), orig.image.mean(2).ravel())[0, 1] > 0.5


def test_eval_warns_on_a_training_store_and_marks_a_random_weight_backbone(tmp_path):
    tiny = {**INPUTS, "model": {"kind": "tiny", "name": "tiny-sd1-v1", "content_sha256": "0" * 64}}
    url = make_store(tmp_path, "figaro", synthetic_samples(3), root=str(tmp_path), inputs=tiny, split="Training")

    # The run's record of its training store: another copy of the same store, not reachable from here (a local
    # path that is gone: an unreachable s3:// URL would be the same case, after the client's retries).
    elsewhere = tmp_path / "another-machine" / "cache" / "figaro" / "Training" / "x.zarr"

    def trained_here(meta):
        meta["stores"] = [{"dataset": "figaro", "split": "Training", "ids_digest": None,
                           "fingerprint": fingerprint(tiny), "url": str(elsewhere)}]

    run = make_run(tmp_path, inputs=tiny, edit=trained_here)
    out = tmp_path / "eval"
    code, stdout, err = invoke("eval", "--run", run, "--cache", url, "--out", out, "--device", "cpu", "--overlays", "0")
    assert code == 0, err
    warning = [ln for ln in err.splitlines() if ln.startswith("warning: ")]
    assert warning == [f"warning: {url} is a store this run trained on (figaro/Training, {elsewhere}): these scores "
                       f"are on training data, not held-out data"], err
    m = json.loads((out / "metrics.json").read_text())
    assert m["evaluated_on_training_store"] is True and m["random_weight_backbone"] is True
    md = (out / "metrics.md").read_text()
    assert "**Warning: evaluated on training data.**" in md
    ours = next(ln for ln in md.splitlines() if "hairdiff (this run)" in ln)
    assert "random-weight test model: these numbers say nothing about the method" in ours

    # Another sample list of the same split (an --ids selection) is not the training store.
    def other_ids(meta):
        trained_here(meta)
        meta["stores"][0]["ids_digest"] = "0a1b2c3d"

    (tmp_path / "b").mkdir()
    run2 = make_run(tmp_path / "b", inputs=tiny, edit=other_ids)
    m = evaluate_run(EvalConfig(run=run2, cache=url, out=tmp_path / "eval2", device="cpu", overlays=0))
    assert m["evaluated_on_training_store"] is False
