"""`pipeline eval`: score a trained head on a store at each annotation's own resolution."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from cache import FeatureStore
from cache.errors import StoreMismatchError
from cache.geometry import unletterbox
from evaluate.boundary import boundary_counts, boundary_f
from evaluate.metrics import confusion_matrix, scores
from evaluate.overlay import save_overlay
from evaluate.report import write_report


def predict_batch(head, feats: dict, device) -> torch.Tensor:
    """(B, K, R?, R?) class probabilities at the head's output stride."""
    from train.head import semantic_probs

    x = {k: torch.from_numpy(np.asarray(v)).to(device) for k, v in feats.items()}
    with torch.inference_mode():
        return semantic_probs(head(x))


def to_annotation(prob: torch.Tensor, orig_size, label_size) -> np.ndarray:
    """Undo the recorded letterbox for one sample and take the per-pixel class."""
    back = unletterbox(prob.unsqueeze(0), tuple(int(v) for v in orig_size), tuple(int(v) for v in label_size))
    return back[0].argmax(0).to(torch.uint8).cpu().numpy()


def _original_image(store: FeatureStore, i: int):
    """The image for overlays: the store holds features only, so read it from the dataset root if reachable."""
    try:
        from extract.readers import get_reader

        reader = get_reader(store.dataset)
        ref = reader.list_samples(Path(store.root), store.split.split("-ids-")[0], [store.ids[i]])[0]
        return reader.load(ref).image
    except Exception:
        return None


def evaluate_run(run_dir, store_url: str, out_dir, device="cpu", batch_size: int = 8, num_overlays: int = 4,
                 progress: bool = True) -> dict:
    from rich.progress import Progress

    from train.checkpoint import load_head

    out_dir = Path(out_dir)
    head, meta = load_head(Path(run_dir), device=device)
    store = FeatureStore.open(store_url)
    if store.fingerprint != meta["fingerprint"]:
        raise StoreMismatchError(f"{store_url} has feature fingerprint {store.fingerprint[:16]} but the run was "
                                 f"trained on {meta['fingerprint'][:16]}: extract this dataset with the run's settings")
    idx = np.flatnonzero(store.done_mask())
    if len(idx) == 0:
        raise StoreMismatchError(f"{store_url} holds no extracted samples yet: run `pipeline extract` first")
    conf = np.zeros((2, 2), np.int64)
    bcounts = np.zeros(4, np.int64)
    per_image = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("eval", total=len(idx))
        for s in range(0, len(idx), batch_size):
            chunk = idx[s:s + batch_size]
            batch = store.read_batch(chunk)
            probs = predict_batch(head, batch["features"], device)
            for j, i in enumerate(chunk):
                label = store.read_label(int(i))
                pred = to_annotation(probs[j], batch["orig_sizes"][j], label.shape)
                c = confusion_matrix(pred, label)
                conf += c
                bcounts += boundary_counts(pred, label)
                sc = scores(c)
                per_image.append({"index": int(i), "id": store.ids[i], "mIoU": sc["mIoU"], "hair_iou": sc["hair_iou"]})
            bar.advance(task, len(chunk))
    metrics = scores(conf)
    metrics["boundary_f"] = boundary_f(bcounts)
    metrics["confusion_matrix"] = conf.tolist()
    trained_on = sorted({s["dataset"] for s in meta["stores"]})
    extra = {"run": str(run_dir), "store": store.url, "dataset": store.dataset, "split": store.split,
             "fingerprint": store.fingerprint, "images": int(len(idx)), "trained_on": trained_on,
             "cross_dataset": store.dataset not in trained_on,
             "backbone": str(meta["fingerprint_inputs"].get("model", {}).get("name", ""))}
    write_report(out_dir, metrics, store.dataset, extra)
    (out_dir / "per_image.json").write_text(json.dumps(per_image, indent=1))
    ranked = sorted((p for p in per_image if not math.isnan(p["mIoU"])), key=lambda p: p["mIoU"])
    picks = [("worst", p) for p in ranked[:num_overlays]] + [("best", p) for p in ranked[::-1][:num_overlays]]
    for rank, (kind, p) in enumerate(picks):
        i = p["index"]
        batch = store.read_batch([i])
        label = store.read_label(i)
        pred = to_annotation(predict_batch(head, batch["features"], device)[0], batch["orig_sizes"][0], label.shape)
        save_overlay(out_dir / "overlays" / f"{kind}_{rank % max(1, num_overlays)}_{p['id']}.png",
                     _original_image(store, i), pred, label)
    return {**metrics, **extra}
