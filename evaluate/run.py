"""`pipeline eval`: score a trained head on a store at each annotation's own resolution."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from hairdiff.cache import FeatureStore
from hairdiff.cache.geometry import unletterbox
from hairdiff.core.devices import resolve_device
from hairdiff.core.errors import BadSampleError, CacheError, DatasetError, StoreMismatchError
from hairdiff.core.files import atomic_write, file_sha256
from hairdiff.core.progress import ProgressFactory, silent
from hairdiff.evaluate.bootstrap import ImageScores, intervals
from hairdiff.evaluate.boundary import boundary_counts, boundary_f
from hairdiff.evaluate.config import EvalConfig, check_run_dir
from hairdiff.evaluate.metrics import PER_IMAGE_KEYS, confusion_matrix, per_image_means, scores
from hairdiff.evaluate.overlay import save_overlay
from hairdiff.evaluate.report import to_json, write_report

# Which number is which in metrics.json (evaluate/metrics.py explains both readings).
READINGS = {"pooled": "top-level mIoU, accuracy, precision, f1, hair_*, mean_class_accuracy: one confusion "
                      "matrix summed over the split's pixels",
            "per_image_mean": "per_image_mean.*: each image scored on its own, then the mean over images"}


def predict_batch(head, feats: dict, device, resolution: int) -> torch.Tensor:
    """(B, K, R, R) class probabilities at the store resolution from cached (B, C, H, W) features."""
    from hairdiff.model.mask2former.head import semantic_probs

    # The head trained on the cached fp16 values cast to float32 (train.loop); do the same here.
    x = {k: torch.from_numpy(np.asarray(v)).to(device).float() for k, v in feats.items()}
    with torch.inference_mode():
        return semantic_probs(head(x), out_size=(resolution, resolution))


def to_annotation(prob: torch.Tensor, orig_size, label_size) -> np.ndarray:
    """Undo the recorded letterbox for one sample and take the per-pixel class."""
    back = unletterbox(prob.unsqueeze(0), tuple(int(v) for v in orig_size), tuple(int(v) for v in label_size))
    return back[0].argmax(0).to(torch.uint8).cpu().numpy()


def _original_image(store: FeatureStore, i: int):
    """The image for overlays: the store holds features only, so read it from the dataset root if reachable;
    None (the overlay is drawn on the labels alone, its key says so) when the dataset is not reachable from
    here (another machine's root, a moved or damaged file). Other errors are bugs and go up."""
    from hairdiff.extract.readers.registry import get_reader

    try:
        reader = get_reader(store.dataset)
        ref = reader.list_samples(Path(store.root), store.split, [store.ids[i]])[0]
        return reader.load(ref).image
    except (DatasetError, BadSampleError, OSError):
        return None


def training_store(store: FeatureStore, trained: list[dict], record: list[dict] | None = None
                   ) -> tuple[dict, int] | None:
    """(the record of the run's training store whose images `store` holds, how many of the images it scores), or
    None. Decided by the images: those `store` holds done (what is scored) against those the run trained on,
    by content digest where both sides keep them (cache/distinct.py). record: RUN/trained_images.json (what the
    run saw, exactly); a run without it is compared with its training stores as they are now, where reachable,
    or, when none is, with what it recorded of them (same location, sample list and features, or data key)."""
    from hairdiff.cache.distinct import images, same_location, shared_images
    from hairdiff.core.errors import HairdiffError

    mine = images(store)
    if record is not None:
        for i, seen in enumerate(record):
            shared = shared_images(mine, seen)
            if shared:
                return (trained[i] if i < len(trained) else seen), len(shared)
        return None
    for t in trained:
        try:
            theirs = images(FeatureStore.open(t["url"])) if t.get("url") else None
        except HairdiffError:
            theirs = None  # not reachable from here: what the run recorded of it decides
        if theirs is not None:
            shared = shared_images(mine, theirs)
            if shared:
                return t, len(shared)
            continue
        same = (t.get("dataset"), t.get("split"), t.get("fingerprint")) == (store.dataset, store.split,
                                                                            store.fingerprint)
        if (t.get("url") and same_location(t["url"], store.url)) or (
                same and t.get("ids_digest", store.ids_digest) == store.ids_digest) or (
                t.get("data_key") and t["data_key"] == store.data_key):
            return t, len(mine["ids"])
    return None


def backbone_identity(fingerprint_inputs: dict) -> dict:
    """The run's backbone identity ({"kind", "name", ...}); older or hand-made records hold a plain name."""
    model = fingerprint_inputs.get("model", {})
    return model if isinstance(model, dict) else {"name": str(model)}


def score_head(head, store: FeatureStore, *, batch_size: int, device, progress: ProgressFactory = silent):
    """The head's metrics on the DONE samples of `store` (at each annotation's own resolution; confusion matrix
    and boundary counts summed over the split) and per-image rows. `pipeline eval` and `pipeline train --val`
    both score through here."""
    idx = np.flatnonzero(store.done_mask())
    idx = idx[store.layout.is_original(idx)]  # the original images: a store's augmented views are for training
    if len(idx) == 0:
        raise CacheError(f"{store.url} holds no extracted samples yet: run `pipeline extract` first")
    total = int(store.layout.num_images)  # the images of the store's split, extracted or not
    conf = np.zeros((2, 2), np.int64)
    bcounts = np.zeros(4, np.int64)
    per_image = []
    with progress("eval", len(idx), 0) as advance:
        for s in range(0, len(idx), batch_size):
            chunk = idx[s:s + batch_size]
            batch = store.read_batch(chunk)
            probs = predict_batch(head, batch["features"], device, store.resolution)
            for j, i in enumerate(chunk):
                label = store.read_label(int(i))
                pred = to_annotation(probs[j], batch["orig_sizes"][j], label.shape)
                c, b = confusion_matrix(pred, label), boundary_counts(pred, label)
                conf += c
                bcounts += b
                sc = scores(c)
                # The image's counts stay with its scores: the bootstrap and `pipeline compare` re-sum them.
                per_image.append({"index": int(i), "id": store.ids[i], **{k: sc[k] for k in PER_IMAGE_KEYS},
                                  "label_size": [int(v) for v in label.shape], "confusion": c.tolist(),
                                  "boundary_counts": b.tolist()})
            advance(len(chunk))
    metrics = scores(conf)  # the pooled reading: the top-level keys
    metrics["boundary_f"] = boundary_f(bcounts)
    metrics["confusion_matrix"] = conf.tolist()
    metrics["per_image_mean"] = per_image_means(per_image)  # the per-image reading
    metrics["readings"] = READINGS
    # How much of the split these numbers cover: a partial store scores only its extracted images.
    metrics.update(images=len(idx), images_total=total, coverage=len(idx) / total)
    return metrics, per_image


def image_intervals(per_image: list[dict]) -> dict:
    """95% intervals of every pooled metric and every per-image mean, from a bootstrap over the scored images
    (evaluate/bootstrap.py), with how many images and resamples."""
    return intervals(ImageScores([r["confusion"] for r in per_image], [r["boundary_counts"] for r in per_image]))


def evaluate_run(cfg: EvalConfig, *, progress: ProgressFactory = silent, warn=None) -> dict:
    """Score the run's head on the DONE samples of a store; returns metrics + provenance (also in cfg.out).

    The store must carry the run's feature fingerprint. The head is RUN/best/ (the best validated one) when
    the run has it and cfg.best, else the final one. Predictions are compared with each exact original
    annotation at its own resolution; the confusion matrix and boundary counts are summed over the split.
    warn(message): told at the start when the store is one the run trained on.
    """
    from hairdiff.model.trained import head_record, head_source, load_head
    from hairdiff.model.trained_images import read_trained_images

    run_dir, out_dir, batch_size = Path(cfg.run), Path(cfg.out), cfg.batch_size
    check_run_dir(run_dir)
    device = str(resolve_device(cfg.device))
    source = head_source(run_dir, cfg.best)
    head, meta = load_head(run_dir, device=device, source=source)
    store = FeatureStore.open(cfg.cache)
    if store.features_fingerprint != meta["fingerprint"]:
        raise StoreMismatchError(f"{cfg.cache} has feature fingerprint {store.features_fingerprint[:16]} but the run was "
                                 f"trained on {meta['fingerprint'][:16]}: extract this dataset with the run's settings")
    seen, trained_images = training_store(store, meta["stores"], read_trained_images(run_dir)) or (None, 0)
    if seen is not None and warn is not None:
        held = ("is a store this run trained on" if trained_images == store.num_images else
                f"holds {trained_images} of its {store.num_images} images in a store this run trained on")
        warn(f"{store.url} {held} ({seen.get('dataset')}/{seen.get('split')}, {seen.get('url')}): these scores "
             f"are on training data, not held-out data")
    metrics, per_image = score_head(head, store, batch_size=batch_size, device=device, progress=progress)
    metrics["intervals"] = image_intervals(per_image)
    trained_on = sorted({s["dataset"] for s in meta["stores"]})
    identity = backbone_identity(meta["fingerprint_inputs"])
    extra = {"run": str(run_dir), "store": store.url, "dataset": store.dataset, "split": store.split,
             "fingerprint": store.fingerprint, "data_key": store.data_key, "trained_on": trained_on,
             # the weights' content: what the model card matches an evaluation to its head by (names and
             # iterations repeat across runs)
             "head": {**head_record(source), "weights_sha256": file_sha256(source["weights"])},
             "cross_dataset": store.dataset not in trained_on,
             "evaluated_on_training_store": seen is not None, "training_store": seen,
             "training_images": trained_images,
             "backbone": str(identity.get("name", "")),
             "random_weight_backbone": identity.get("kind") == "tiny"}  # extract's built-in `--model tiny`
    write_report(out_dir, metrics, store.dataset, extra)
    atomic_write(out_dir / "per_image.json", to_json(per_image))
    ranked = sorted((p for p in per_image if not math.isnan(p["mIoU"])), key=lambda p: p["mIoU"])
    n = min(cfg.overlays, len(ranked))
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
