"""`pipeline predict`: the whole chain on new images, with the backbone and preprocessing of the run."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hairdiff.cache import fingerprint
from hairdiff.cache.geometry import letterbox_image, unletterbox
from hairdiff.cache.quantize import round_trip
from hairdiff.core.devices import resolve_device
from hairdiff.core.errors import BadInputStop, BadSampleError, RunMismatchError, UsageError
from hairdiff.evaluate.config import PredictConfig, check_run_dir
from hairdiff.evaluate.overlay import mask_overlay

# The image files a folder contributes (the folder dataset's own list, so both commands read the same files).
from hairdiff.extract.readers.base import list_files
from hairdiff.extract.readers.folder import IMAGE_EXT
from hairdiff.model.trained import head_source, load_head


def describe_head(source: dict) -> str:
    """One line saying which head of a run is used (eval and predict say it alike)."""
    if source["source"] == "best":
        return (f"the best validated head: {source['weights']} (iteration {source['iteration']}, val "
                f"{source['metric']} {source['score']:.2f}); --no-best takes the final head")
    if source["source"] == "final":
        return f"the final head: {source['weights']} (iteration {source['iteration']})"
    return (f"the latest checkpoint of an unfinished run: {source['weights']} (iteration {source['iteration']})")


def image_paths(items: list[str]) -> list[Path]:
    """Files as given, folders expanded to their image files (sorted by name, not recursive). UsageError
    naming the first path that is missing, not an image file name, or a folder without images."""
    exts = " ".join(IMAGE_EXT)
    paths: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            # The extract readers' listing: a link whose target is gone is listed (then a bad image, named).
            found = [f for f in list_files(p) if f.suffix.lower() in IMAGE_EXT]
            if not found:
                raise UsageError(f"{p}: the folder holds no image file ({exts}): pass another folder or the image "
                                 "files themselves")
            paths += found
        elif not p.exists():
            if p.is_symlink():
                raise UsageError(f"{p}: a symbolic link to {os.readlink(p)}, which does not exist: restore the "
                                 "target, or leave the link out")
            raise UsageError(f"{p}: no such file or folder: check the path")
        elif p.suffix.lower() not in IMAGE_EXT:
            raise UsageError(f"{p}: not an image file name ({exts}): leave it out, or rename it if it is an image")
        else:
            paths.append(p)
    return paths


def _model_arg(identity: dict, override: str | None) -> str:
    if override:
        return override
    if identity.get("kind") == "tiny":
        return "tiny"
    if identity.get("kind") == "hub":
        return identity["name"]
    raise RunMismatchError(f"the run's backbone was a local model ({identity.get('name')}): pass its folder with "
                           "--model /path/to/model")


def segment(fx, head, images: list[np.ndarray], resolution: int) -> list[torch.Tensor]:
    """Class probabilities (K, H, W) at each image's own size, from one backbone pass over the batch."""
    from hairdiff.extract.loading import to_model_input
    from hairdiff.model.mask2former.head import semantic_probs

    bb = fx.bb
    x = to_model_input([letterbox_image(img, resolution) for img in images], bb.device, bb.dtype)
    with torch.inference_mode():
        # The head trained on features as its store gave them back (float16, or int8's round trip), as float32.
        feats = {k: torch.from_numpy(round_trip(v.cpu().numpy(), fx.precision)).to(bb.device).float()
                 for k, v in fx(x).items()}
        prob = semantic_probs(head(feats), out_size=(resolution, resolution))
    return [unletterbox(prob[j:j + 1], img.shape[:2], img.shape[:2])[0] for j, img in enumerate(images)]


def _read(path: Path) -> np.ndarray:
    from hairdiff.extract.imageio import load_rgb

    if not os.path.lexists(path):  # checked at the start; gone since then (a dangling link: named by load_rgb)
        raise BadSampleError(path, "the file is missing (removed while predicting?)", "restore it or leave it out")
    return load_rgb(path)


def head_record(source: dict) -> dict:
    """Which head predicted, as predictions.json and the command's output say it (train.checkpoint.head_source's
    answer without the provenance)."""
    return {k: v for k, v in source.items() if k != "meta"}


def _load(cfg: PredictConfig, source: dict):
    """The run's head (the one `source` names) and the feature extractor that reproduces its training
    features, checked."""
    from hairdiff.extract.backbone import load_backbone
    from hairdiff.extract.features import FeatureExtractor

    run_dir, device = Path(cfg.run), str(resolve_device(cfg.device))
    head, meta = load_head(run_dir, device=device, source=source)
    fi = meta["fingerprint_inputs"]
    if fingerprint(fi) != meta["fingerprint"]:
        raise RunMismatchError(f"{source['record']}: its fingerprint_inputs do not hash to its fingerprint (edited "
                               "by hand?): use the run folder as `pipeline train` wrote it")
    identity = fi["model"]
    bb = load_backbone(_model_arg(identity, cfg.model), device=device, dtype=getattr(torch, fi["compute_dtype"]),
                       revision=identity.get("revision"))
    fx = FeatureExtractor.from_fingerprint_inputs(bb, fi)
    mine = fx.fingerprint_inputs
    if fingerprint(mine) != meta["fingerprint"]:
        differ = sorted(k for k in set(mine) | set(fi) if mine.get(k) != fi.get(k))
        raise RunMismatchError(f"{run_dir}: the backbone and settings loaded now do not reproduce the features the "
                               f"head was trained on (differs in: {', '.join(differ)}; run: "
                               f"{fi.get('model')}, now: {mine.get('model')}); pass the run's own model with --model")
    return head, fx, fi["resolution"]


def predict_images(cfg: PredictConfig, warn=None, say=None) -> list[dict]:
    """Segment hair in each image; writes <stem>_mask.png (0/255), <stem>_overlay.png and predictions.json
    ({"run", "head", "predictions": rows}).

    Every path is checked before anything is loaded. The head is the one `pipeline eval` scores: RUN/best/
    when the run validated and cfg.best, else the final one (model.trained.head_source); say(message) is
    told which. The backbone, taps, prompt, timestep, resolution and noise seed come from the run's
    fingerprint inputs; `cfg.model` overrides where the backbone is loaded from (the fingerprint check still
    applies). An image that cannot be read stops the run (BadInputStop, predictions.json lists what was
    done) or, with on_error="skip", becomes a row {"image", "error"} and warn(message). Rows follow the
    order of the images.
    """
    paths = image_paths(cfg.images)
    check_run_dir(cfg.run)
    source = head_source(Path(cfg.run), cfg.best)
    if say is not None:
        say(describe_head(source))
    head, fx, resolution = _load(cfg, source)
    out = _Predictions(cfg, source, len(paths), lambda images: segment(fx, head, images, resolution))
    for k, path in enumerate(paths):
        try:
            img = _read(path)
        except BadSampleError as e:
            if cfg.on_error == "stop":
                out.flush()  # the images before this one are kept
                n = len(out.save())
                raise BadInputStop(f"{e}; stopped there (--on-error stop): the {n} image(s) before it are in "
                                   f"{out.json}; pass --on-error skip to go on past unreadable images") from None
            out.rows[k] = {"image": str(path), "error": str(e)}
            if warn is not None:
                warn(f"skipped {e}")
            continue
        out.add(k, path, img)
    out.flush()
    kept = out.save()
    if not any("mask" in r for r in kept):
        raise BadInputStop(f"none of the {len(paths)} image(s) could be read; each is listed with its reason in "
                           f"{out.json}")
    return kept


class _Predictions:
    """predict's outputs: images segmented a batch at a time, each mask and overlay written under a stem of its
    own, and predictions.json with a row per image in the images' order."""

    def __init__(self, cfg: PredictConfig, source: dict, n: int, segment_batch):
        self.cfg, self.source, self.segment_batch = cfg, source, segment_batch
        self.dir = Path(cfg.out)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.json = self.dir / "predictions.json"
        self.rows: list[dict | None] = [None] * n
        self.used: set[str] = set()
        self.pending: list[tuple[int, Path, np.ndarray]] = []

    def add(self, k: int, path: Path, img: np.ndarray) -> None:
        self.pending.append((k, path, img))
        if len(self.pending) == self.cfg.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        for (k, path, img), prob in zip(self.pending, self.segment_batch([p[2] for p in self.pending])):
            pred = prob.argmax(0).to(torch.uint8).cpu().numpy()
            stem = path.stem
            while stem in self.used:  # a.jpg from two folders must not overwrite each other's mask
                stem += "_"
            self.used.add(stem)
            Image.fromarray(pred * 255).save(self.dir / f"{stem}_mask.png")
            Image.fromarray(mask_overlay(img, pred)).save(self.dir / f"{stem}_overlay.png")
            self.rows[k] = {"image": str(path), "mask": str(self.dir / f"{stem}_mask.png"),
                            "overlay": str(self.dir / f"{stem}_overlay.png"), "height": img.shape[0],
                            "width": img.shape[1], "hair_fraction": float(pred.mean())}
        self.pending.clear()

    def save(self) -> list[dict]:
        kept = [r for r in self.rows if r is not None]
        record = {"run": str(self.cfg.run), "head": head_record(self.source), "predictions": kept}
        self.json.write_text(json.dumps(record, indent=2))
        return kept
