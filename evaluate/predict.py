"""`pipeline predict`: the whole chain on new images, with the backbone and preprocessing of the run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cache import fingerprint
from cache.geometry import letterbox_image, unletterbox
from evaluate.overlay import mask_overlay


class RunMismatchError(ValueError):
    pass


def _model_arg(identity: dict, override: str | None) -> str:
    if override:
        return override
    if identity.get("kind") == "tiny":
        return "tiny"
    if identity.get("kind") == "hub":
        return identity["name"]
    raise RunMismatchError(f"the run's backbone was a local model ({identity.get('name')}): pass its folder with "
                           "--model /path/to/model")


def predict_images(run_dir, images: list[Path], out_dir, device="cpu", model: str | None = None) -> list[dict]:
    from extract.backbone import load_backbone
    from extract.features import FeatureExtractor
    from extract.imageio import load_rgb
    from extract.loading import to_model_input
    from extract.runner import ExtractConfig, full_fingerprint_inputs
    from extract.taps import resolve_taps
    from train.checkpoint import load_head
    from train.head import semantic_probs

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    head, meta = load_head(Path(run_dir), device=device)
    fi = meta["fingerprint_inputs"]
    dtype = getattr(torch, fi["compute_dtype"])
    identity = fi["model"]
    bb = load_backbone(_model_arg(identity, model), device=device, dtype=dtype, revision=identity.get("revision"))
    fx = FeatureExtractor(bb, resolve_taps(",".join(fi["taps"]), bb), prompt=fi["prompt"], timestep=fi["timestep"],
                          resolution=fi["resolution"], seed=fi["noise"]["seed"])
    cfg = ExtractConfig(dataset="", root="", split="", cache_root="", resolution=fi["resolution"],
                        precision=meta.get("store_precision") or "fp16")
    mine = full_fingerprint_inputs(cfg, fx)
    mine["store_precision"] = fi.get("store_precision", mine["store_precision"])
    if fingerprint(mine) != meta["fingerprint"]:
        raise RunMismatchError("the backbone loaded now does not reproduce the run's features (fingerprint "
                               "differs): pass the run's model with --model")
    rows = []
    for path in images:
        img = load_rgb(path)
        x = to_model_input([letterbox_image(img, fi["resolution"])], torch.device(device), dtype)
        with torch.inference_mode():
            feats = {k: v.to(torch.float16) for k, v in fx(x).items()}  # the head saw fp16 cached features
            prob = semantic_probs(head(feats))
        back = unletterbox(prob, img.shape[:2], img.shape[:2])[0]
        pred = back.argmax(0).to(torch.uint8).cpu().numpy()
        stem = Path(path).stem
        Image.fromarray(pred * 255).save(out_dir / f"{stem}_mask.png")
        Image.fromarray(mask_overlay(img, pred)).save(out_dir / f"{stem}_overlay.png")
        rows.append({"image": str(path), "mask": str(out_dir / f"{stem}_mask.png"),
                     "overlay": str(out_dir / f"{stem}_overlay.png"), "height": img.shape[0], "width": img.shape[1],
                     "hair_fraction": float(pred.mean())})
    (out_dir / "predictions.json").write_text(json.dumps(rows, indent=2))
    return rows
