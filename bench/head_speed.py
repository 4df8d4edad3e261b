"""The head's training step alone on a GPU: paper-size Mask2Former (HeadConfig defaults) at 512, batch 16,
bf16 autocast, random features of the SD 1.x `unet` shapes (a cost measurement, not a quality one).

Three layouts: mask features at stride 8 (heads before stride-4 mask features), at 4 through the learned x2
stage (the default), and with an extra stride-4 VAE-encoder tap (512 channels); plus semantic inference with
logits upsampled first against probabilities first. The step is what `pipeline train` runs (per-sample
losses as train.loop.batch_loss computes them), so it bounds training speed from the cache.

    python bench/head_speed.py            # needs CUDA; writes bench/results/head_speed.json
"""
from __future__ import annotations

import dataclasses
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import torch

from report import checkout_on_path, table, write

checkout_on_path()
from hairdiff.train.mask2former.criterion import build_criterion  # noqa: E402
from hairdiff.train.mask2former.head import HeadConfig, Mask2FormerHead, semantic_probs  # noqa: E402
from hairdiff.train.mask2former.targets import semantic_targets  # noqa: E402
from hairdiff.train.optim import build_optimizer  # noqa: E402

Lv = namedtuple("Lv", "name stride channels height width")
R, B = 512, 16
UNET = [Lv("up_blocks.0", 32, 1280, 16, 16), Lv("up_blocks.1", 16, 1280, 32, 32), Lv("up_blocks.2", 8, 640, 64, 64),
        Lv("up_blocks.3", 8, 320, 64, 64)]
S4 = UNET + [Lv("vae_enc_s4", 4, 512, 128, 128)]
DEV = "cuda"


def labels(n, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:R, :R]
    out = np.zeros((n, R, R), np.uint8)
    for b in range(n):
        cy, cx, ry, rx = rng.uniform(150, 350, 4) * [1, 1, 0.5, 0.5]
        out[b][((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] = 1
        out[b, 400:] = 255
    return torch.from_numpy(out).to(DEV)


def bench(name, levels, cfg, iters=10, warm=3):
    torch.manual_seed(0)
    head = Mask2FormerHead(levels, cfg).to(DEV)
    crit = build_criterion(cfg).to(DEV)
    opt = build_optimizer(head, 1e-4, 0.05)
    feats = {lv.name: torch.randn(B, lv.channels, lv.height, lv.width, device=DEV).half() for lv in levels}
    targets = semantic_targets(labels(B))
    torch.cuda.reset_peak_memory_stats()
    times = []
    for it in range(warm + iters):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = head({k: v.float() for k, v in feats.items()})
        total = 0
        for i in range(B):  # per-sample losses, as train.loop.batch_loss computes them
            sl = {"pred_logits": out["pred_logits"][i:i + 1].float(), "pred_masks": out["pred_masks"][i:i + 1].float(),
                  "aux_outputs": [{k: v[i:i + 1].float() for k, v in a.items()} for a in out["aux_outputs"]]}
            gen = torch.Generator(device=DEV).manual_seed(it * B + i)
            total = total + crit(sl, [targets[i]], generator=gen)["loss"]
        loss = total / B
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 0.01)
        opt.step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    t = float(np.median(times[warm:]))
    head.eval()
    inf = {}
    with torch.inference_mode():
        o = head({k: v[:8].float() for k, v in feats.items()})
        for order in ("logits_first", "probs_first"):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(5):
                if order == "logits_first":
                    semantic_probs(o, out_size=(R, R))
                else:
                    torch.nn.functional.interpolate(semantic_probs(o), size=(R, R), mode="bilinear")
            torch.cuda.synchronize()
            inf[order] = (time.perf_counter() - t0) / 5
    return {"layout": name, "mask_stride": head.output_stride, "step_s": round(t, 4), "images_per_s": round(B / t, 1),
            "peak_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2), "loss": float(loss.detach()),
            "semantic_probs_s_batch8": {k: round(v, 4) for k, v in inf.items()},
            "head_params_M": round(sum(p.numel() for p in head.parameters()) / 1e6, 2)}


def main() -> None:
    base = HeadConfig()
    rows = [bench("unet, mask features at 8 (before)", UNET, dataclasses.replace(base, mask_stride=None)),
            bench("unet, learned x2 upsampling to 4", UNET, base),
            bench("unet + VAE-enc 512@4 tap", S4, base)]
    path = write("head_speed", rows, {"device_arg": DEV, "batch": B, "resolution": R},
                 Path(__file__).resolve().parent / "results")
    table(f"head training step, batch {B} at {R}²", rows, [
        ("layout", "layout", ""), ("img/s", "images_per_s", ".1f"), ("step s", "step_s", ".3f"),
        ("peak GiB", "peak_GiB", ".1f")])
    print(path)


if __name__ == "__main__":
    main()
