"""`pipeline predict`: the whole chain on new images, with the backbone and preprocessing of the run."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

from hairdiff.cache import fingerprint
from hairdiff.cache.geometry import letterbox_image, unletterbox
from hairdiff.core.devices import resolve_device
from hairdiff.core.errors import RunMismatchError
from hairdiff.evaluate.config import PredictConfig
from hairdiff.evaluate.overlay import mask_overlay


def _model_arg(identity: dict, override: str | None) -> str:
    if override:
        return override
    if identity.get("kind") == "tiny":
        return "tiny"
    if identity.get("kind") == "hub":
        return identity["name"]
    raise RunMismatchError(f"the run's backbone was a local model ({identity.get('name')}): pass its folder with "
                           "--model /path/to/model")


def predict_images(cfg: PredictConfig) -> list[dict]:
    """Segment hair in each image; writes <stem>_mask.png (0/255), <stem>_overlay.png and predictions.json.

    The backbone, taps, prompt, timestep, resolution and noise seed come from the run's fingerprint inputs;
    `cfg.model` overrides where the backbone is loaded from (the fingerprint check still applies).
    """
    from hairdiff.extract.backbone import load_backbone
    from hairdiff.extract.features import FeatureExtractor
    from hairdiff.extract.imageio import load_rgb
    from hairdiff.extract.loading import to_model_input
    from hairdiff.train.checkpoint import load_head
    from hairdiff.train.mask2former.head import semantic_probs

    run_dir, images, device = Path(cfg.run), [Path(p) for p in cfg.images], str(resolve_device(cfg.device))
    out_dir = Path(cfg.out)
    head, meta = load_head(run_dir, device=device)
    fi = meta["fingerprint_inputs"]
    if fingerprint(fi) != meta["fingerprint"]:
        raise RunMismatchError(f"{run_dir}/run.json: its fingerprint_inputs do not hash to its fingerprint (edited "
                               "by hand?): use the run folder as `pipeline train` wrote it")
    dtype = getattr(torch, fi["compute_dtype"])
    identity = fi["model"]
    bb = load_backbone(_model_arg(identity, cfg.model), device=device, dtype=dtype, revision=identity.get("revision"))
    fx = FeatureExtractor.from_fingerprint_inputs(bb, fi)
    mine = fx.fingerprint_inputs
    if fingerprint(mine) != meta["fingerprint"]:
        differ = sorted(k for k in set(mine) | set(fi) if mine.get(k) != fi.get(k))
        raise RunMismatchError(f"{run_dir}: the backbone and settings loaded now do not reproduce the features the "
                               f"head was trained on (differs in: {', '.join(differ)}; run: "
                               f"{fi.get('model')}, now: {mine.get('model')}); pass the run's own model with --model")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, used = [], set()
    for path in images:
        img = load_rgb(path)
        x = to_model_input([letterbox_image(img, fi["resolution"])], torch.device(device), dtype)
        with torch.inference_mode():
            # The head trained on features rounded to the store's fp16 then cast to float32 (int8 stores:
            # fp16 here too, the quantisation error is not reproduced).
            feats = {k: v.to(torch.float16).float() for k, v in fx(x).items()}
            prob = semantic_probs(head(feats), out_size=(fi["resolution"], fi["resolution"]))
        back = unletterbox(prob, img.shape[:2], img.shape[:2])[0]
        pred = back.argmax(0).to(torch.uint8).cpu().numpy()
        stem = Path(path).stem
        while stem in used:  # a.jpg from two folders must not overwrite each other's mask
            stem += "_"
        used.add(stem)
        Image.fromarray(pred * 255).save(out_dir / f"{stem}_mask.png")
        Image.fromarray(mask_overlay(img, pred)).save(out_dir / f"{stem}_overlay.png")
        rows.append({"image": str(path), "mask": str(out_dir / f"{stem}_mask.png"),
                     "overlay": str(out_dir / f"{stem}_overlay.png"), "height": img.shape[0], "width": img.shape[1],
                     "hair_fraction": float(pred.mean())})
    (out_dir / "predictions.json").write_text(json.dumps(rows, indent=2))
    return rows
