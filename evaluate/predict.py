"""`pipeline predict`: the whole chain on new image files, with the backbone and preprocessing of the run: the
Python API's HairSegmenter (evaluate/segmenter.py) writing masks, overlays and predictions.json."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from hairdiff.core.errors import BadInputStop, BadSampleError, UsageError
from hairdiff.evaluate.config import PredictConfig
from hairdiff.evaluate.overlay import mask_overlay
from hairdiff.evaluate.segmenter import HairSegmenter

# The image files a folder contributes (the folder dataset's own list, so both commands read the same files).
from hairdiff.extract.readers.base import list_files
from hairdiff.extract.readers.folder import IMAGE_EXT
from hairdiff.model.trained import head_record


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


def _read(path: Path) -> np.ndarray:
    from hairdiff.extract.imageio import load_rgb

    if not os.path.lexists(path):  # checked at the start; gone since then (a dangling link: named by load_rgb)
        raise BadSampleError(path, "the file is missing (removed while predicting?)", "restore it or leave it out")
    return load_rgb(path)


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
    segmenter = HairSegmenter.from_run(cfg.run, device=cfg.device, model=cfg.model, best=cfg.best,
                                       batch_size=cfg.batch_size, say=say)
    out = _Predictions(cfg, segmenter.source, len(paths), segmenter.segment_arrays)
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
        batch = self.segment_batch([p[2] for p in self.pending], [str(p[1]) for p in self.pending])
        for (k, path, img), seg in zip(self.pending, batch):
            pred = seg.mask
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
