"""`pipeline eval`: score a trained head on a store at each annotation's own resolution."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from cache import FeatureStore
from cache.errors import CacheError, StoreMismatchError
from cache.geometry import unletterbox
from evaluate.boundary import boundary_counts, boundary_f
from evaluate.metrics import confusion_matrix, scores
from evaluate.overlay import save_overlay
from evaluate.report import atomic_write_text, to_json, write_report


def predict_batch(head, feats: dict, device, resolution: int) -> torch.Tensor:
    """(B, K, R, R) class probabilities at the store resolution from cached (B, C, H, W) features."""
    from train.head import semantic_probs

    # The head trained on the cached fp16 values cast to float32 (train.loop); do the same here.
    x = {k: torch.from_numpy(np.asarray(v)).to(device).float() for k, v in feats.items()}
    with torch.inference_mode():
        return semantic_probs(head(x), out_size=(resolution, resolution))


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
    """Score the run's head on the DONE samples of a store; returns metrics + provenance (also in out_dir).

    The store must carry the run's feature fingerprint. Predictions are compared with each exact original
    annotation at its own resolution; the confusion matrix and boundary counts are summed over the split.
    """
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
        raise CacheError(f"{store_url} holds no extracted samples yet: run `pipeline extract` first")
    conf = np.zeros((2, 2), np.int64)
    bcounts = np.zeros(4, np.int64)
    per_image = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("eval", total=len(idx))
        for s in range(0, len(idx), batch_size):
            chunk = idx[s:s + batch_size]
            batch = store.read_batch(chunk)
            probs = predict_batch(head, batch["features"], device, store.resolution)
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
    atomic_write_text(out_dir / "per_image.json", to_json(per_image))
    ranked = sorted((p for p in per_image if not math.isnan(p["mIoU"])), key=lambda p: p["mIoU"])
    n = min(num_overlays, len(ranked))
    picks = [("worst", r, p) for r, p in enumerate(ranked[:n])] + [("best", r, p) for r, p in enumerate(ranked[::-1][:n])]
    for kind, rank, p in picks:
        i = p["index"]
        batch = store.read_batch([i])
        label = store.read_label(i)
        prob = predict_batch(head, batch["features"], device, store.resolution)[0]
        pred = to_annotation(prob, batch["orig_sizes"][0], label.shape)
        name = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(p["id"]))  # ids may hold "/"
        save_overlay(out_dir / "overlays" / f"{kind}_{rank}_{name}.png", _original_image(store, i), pred, label)
    return {**metrics, **extra}
