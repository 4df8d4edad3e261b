"""Stage one end to end through `pipeline extract`'s own code: JPEG files on disk -> store on local disk.

Reports images/s, seconds per stage (decode, H2D, VAE, UNet, D2H, compress, write), the GPU's
busy fraction and memory peak, the batch used; the FLOP ceiling (FLOPs counted by torch.utils.flop_counter
for exactly the work done, over the bf16 matmul rate measured in this run) and `ceiling_fraction`; and a
naive baseline measured in the same run (one image at a time, float32, plain diffusers forward with hooks,
`numpy.save` per image) for `speedup_vs_naive`. With --variants, each acceleration setting is measured on its
own on the device (bench/NOTES.md holds the predictions made before).

    python bench/build_sd1_random.py /tmp/sd1                         # SD 1.x architecture, random weights
    python bench/extract_speed.py --model /tmp/sd1 --images 1024      # GPU (BENCHMARKS.md: bench/gpu_run.sh)
    python bench/extract_speed.py --model tiny --resolution 64 --images 16 --naive-images 4   # CPU smoke run
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from report import checkout_on_path, table, write

checkout_on_path()
from hairdiff.extract.config import ExtractConfig  # noqa: E402
from hairdiff.extract.runner import ExtractStats, run_local  # noqa: E402


def make_jpegs(root: Path, n: int, size: int) -> Path:
    """n procedural portraits in the folder layout, images as JPEG (as datasets ship them)."""
    from PIL import Image

    from hairdiff.demo.hairlike import make_hairlike_dataset

    make_hairlike_dataset(root, n=min(n, 64), size=size, seed=0)
    pngs = sorted((root / "images").glob("*.png"))
    for i in range(n):  # repeat the first 64 under new names: decoding costs the same
        src = pngs[i % len(pngs)]
        Image.open(src).convert("RGB").save(root / "images" / f"img{i:05d}.jpg", quality=92)
        if i >= len(pngs):
            (root / "masks" / f"img{i:05d}.png").write_bytes((root / "masks" / f"{src.stem}.png").read_bytes())
        else:
            (root / "masks" / f"{src.stem}.png").rename(root / "masks" / f"img{i:05d}.png")
    for p in pngs:
        p.unlink()
    return root


def matmul_tflops(device: torch.device) -> float:
    """bf16 matrix-product rate on random data (the unit the backbone's convolutions and attention use)."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    reps = 10 if device.type == "cuda" else 3
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e12


def naive_images_per_s(model: str, root: Path, cfg: ExtractConfig, n: int, device: torch.device) -> float:
    """One image at a time, float32, the plain diffusers forward (no early stop) with hooks, np.save each."""
    from hairdiff.cache.geometry import letterbox_image
    from hairdiff.extract.backbone import load_backbone
    from hairdiff.extract.imageio import load_rgb
    from hairdiff.extract.taps import resolve_taps

    bb = load_backbone(model, device=device, dtype=torch.float32)
    taps = resolve_taps(cfg.taps, bb)
    captured = {}
    for t in taps:
        root_module = bb.unet if t.network == "unet" else bb.vae
        m = root_module.get_submodule(t.module_path)
        if t.kind == "input":
            m.register_forward_pre_hook(lambda mod, args, name=t.name: captured.__setitem__(name, args[0]))
        else:
            m.register_forward_hook(lambda mod, args, out, name=t.name: captured.__setitem__(
                name, out[0] if isinstance(out, tuple) else out))
    ids = bb.tokenizer(cfg.prompt, padding="max_length", max_length=bb.tokenizer.model_max_length, truncation=True,
                       return_tensors="pt").input_ids.to(device)
    out = Path(tempfile.mkdtemp(prefix="naive-"))
    files = sorted((root / "images").glob("*.jpg"))[:n]
    with torch.inference_mode():
        text = bb.text_encoder(ids)[0]
        noise = torch.randn((1, 4, cfg.resolution // 8, cfg.resolution // 8), generator=torch.Generator().manual_seed(0))
        t0 = time.perf_counter()
        for k, f in enumerate(files):
            img = letterbox_image(load_rgb(f), cfg.resolution)
            x = torch.from_numpy(img).permute(2, 0, 1)[None].float().div(127.5).sub(1).to(device)
            lat = bb.vae.encode(x).latent_dist.mean * bb.vae.config.scaling_factor
            t = torch.tensor([cfg.timestep], device=device)
            noisy = bb.scheduler.add_noise(lat, noise.to(device), t)
            bb.unet(noisy, t, encoder_hidden_states=text)
            for name, v in captured.items():
                np.save(out / f"{k}-{name}.npy", v.float().cpu().numpy())
        dt = time.perf_counter() - t0
    return len(files) / dt


def device_compute_images_per_s(fx, batch: int, reps: int) -> float:
    """The extractor alone on the device (synthetic input, no host stages): what a setting changes there."""
    r, dev = fx.resolution, fx.bb.device
    x = torch.rand((batch, 3, r, r), device=dev, dtype=fx.bb.dtype).mul(2).sub(1)
    fx(x)  # warm-up (kernel selection)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fx(x)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return batch * reps / (time.perf_counter() - t)


def variants(cfg: ExtractConfig, batch: int, reps: int) -> list[dict]:
    """Each acceleration setting on its own, against the product's defaults, on one loaded backbone (settings
    are switched back after each row; bfloat16 needs its own load, compilation comes last)."""
    from hairdiff.extract import acceleration
    from hairdiff.extract.runner import build_extractor

    rows = []

    batch = min(batch, 32)  # enough to fill the GPU; plain attention at 128 x 4096² scores would not fit

    def measure(name, fx, b=batch, **extra):
        try:
            ips = device_compute_images_per_s(fx, b, reps)
        except Exception as e:  # e.g. out of memory: a finding, not a reason to lose the other rows
            rows.append({"variant": name, "batch": b, "error": f"{type(e).__name__}: {str(e)[:160]}"})
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return
        rows.append({"variant": name, "batch": b, "device_images_per_s": ips, **extra})

    fx = build_extractor(ExtractConfig(**{**cfg.__dict__, "batch_size": batch}))
    measure("default (fp16, channels-last, SDPA, early stop)", fx)
    acceleration.set_channels_last(fx.bb, False)
    measure("no channels-last", fx)
    acceleration.set_channels_last(fx.bb, True)
    acceleration.set_sdpa(fx.bb, False)
    measure("no SDPA (plain attention)", fx)
    acceleration.set_sdpa(fx.bb, True)
    measure("batch 8", fx, b=8)
    last, fx._last = fx._last, {}  # every network runs to its end
    measure("no early stop (full UNet)", fx)
    fx._last = last
    del fx
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    bf = build_extractor(ExtractConfig(**{**cfg.__dict__, "batch_size": batch, "dtype": "bfloat16"}))
    measure("bfloat16", bf)
    return rows


def compiled_row(cfg: ExtractConfig, batch: int, reps: int) -> dict:
    """torch.compile of the backbone's blocks: warm-up (compilation) apart from the steady rate."""
    from hairdiff.extract import acceleration
    from hairdiff.extract.runner import build_extractor

    fx = build_extractor(ExtractConfig(**{**cfg.__dict__, "batch_size": batch}))
    t = time.perf_counter()
    acceleration.compile_blocks(fx.bb)
    warm = acceleration.warm_up(fx, batch)
    return {"variant": "torch.compile (blocks)", "batch": batch, "warmup_seconds": warm,
            "device_images_per_s": device_compute_images_per_s(fx, batch, reps),
            "setup_seconds": time.perf_counter() - t}


def append_compiled(a, device) -> None:
    """--compile-only: add the torch.compile row to an existing extract_speed.json (run it last: compiling the
    SD blocks can take minutes, so a time limit may cut it without losing the other rows)."""
    path = (a.out or Path(__file__).resolve().parent / "results") / "extract_speed.json"
    res = json.loads(path.read_text())
    s = res["summary"]
    cfg = ExtractConfig(dataset="folder", root=".", model=a.model, resolution=s["resolution"], dtype=a.dtype)
    row = compiled_row(cfg, min(int(s["batch_used"]), 32), a.reps)
    res["rows"].append({**res["rows"][0], "run": f"device only: {row['variant']}", "images_per_s":
                        row["device_images_per_s"], **row})
    path.write_text(json.dumps(res, indent=2, default=str))
    print(json.dumps(row, indent=1))


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a diffusers folder (bench/build_sd1_random.py) or tiny")
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--batch-size", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--workers", type=int, default=4, help="decode processes")
    ap.add_argument("--writers", type=int, default=None, help="default: the product's")
    ap.add_argument("--naive-images", type=int, default=16)
    ap.add_argument("--variants", action="store_true", help="also measure each acceleration setting on its own")
    ap.add_argument("--reps", type=int, default=10, help="timed batches per variant")
    ap.add_argument("--compile-only", action="store_true", help="add the torch.compile row to extract_speed.json")
    ap.add_argument("--out", type=Path, default=None)
    return ap.parse_args()


def main() -> None:
    a = _args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if a.compile_only:
        return append_compiled(a, device)
    work = Path(tempfile.mkdtemp(prefix="extract-speed-"))
    root = make_jpegs(work / "data", a.images, a.resolution)
    kw = {"dataset": "folder", "root": str(root), "model": a.model, "resolution": a.resolution, "dtype": a.dtype,
          "batch_size": a.batch_size, "workers": a.workers, "cache_root": str(work / "cache")}
    if a.writers:
        kw["writers"] = a.writers
    cfg = ExtractConfig(**kw)
    from hairdiff.extract.flops import count_flops
    from hairdiff.extract.runner import build_extractor

    fx = build_extractor(cfg)
    # Warm the process once (CUDA context, kernel selection, page cache) on a few images, then time a run.
    run_local(ExtractConfig(**{**kw, "cache_root": str(work / "warm"), "limit": min(a.images, 64)}), ExtractStats(),
              log=lambda *x: None, extractor=fx)
    stats = ExtractStats()
    run_local(cfg, stats, log=lambda *x: None, extractor=fx)
    ips = stats.images_per_s
    flops = count_flops(fx, batch_size=1)
    del fx
    tflops = matmul_tflops(device)
    ceiling = tflops * 1e12 / flops["total"]
    naive = naive_images_per_s(a.model, root, cfg, min(a.naive_images, a.images), device)
    per_image = {k: v / max(stats.computed, 1) for k, v in stats.stage_seconds.items()}
    summary = {
        "device_arg": str(device), "model": a.model, "resolution": a.resolution, "images": stats.computed,
        "images_per_s": ips, "batch_used": stats.batch_size, "writers": stats.writers, "workers": a.workers,
        "gpu_busy_fraction": stats.gpu_busy_fraction, "gpu_memory_peak_gb": stats.gpu_memory_peak_gb,
        "stage_seconds": stats.stage_seconds, "stage_seconds_per_image": per_image,
        "flops_per_image": flops, "matmul_tflops_bf16": tflops, "ceiling_images_per_s": ceiling,
        "ceiling_fraction": ips / ceiling, "naive_images_per_s": naive, "speedup_vs_naive": ips / naive,
        "recomputed_fp32": stats.recomputed, "store": stats.store,
    }
    _report(a, cfg, stats, summary)


def _report(a, cfg, stats, summary: dict) -> None:
    """The table (with the variants' rows when asked) and extract_speed.json."""
    ips, ceiling, naive = summary["images_per_s"], summary["ceiling_images_per_s"], summary["naive_images_per_s"]
    rows = [{"run": "pipeline extract (product path)", "images_per_s": ips, "batch": stats.batch_size,
             "gpu_busy_fraction": stats.gpu_busy_fraction, "ceiling_fraction": ips / ceiling},
            {"run": "naive (1 image, fp32, full forward, np.save)", "images_per_s": naive, "batch": 1},
            {"run": "FLOP ceiling (bf16 matmul rate)", "images_per_s": ceiling}]
    if a.variants:
        for v in variants(cfg, stats.batch_size, a.reps):
            rows.append({"run": f"device only: {v['variant']}", "images_per_s": v.get("device_images_per_s"),
                         "batch": v.get("batch"), **v})
    path = write("extract_speed", rows, summary, a.out or Path(__file__).resolve().parent / "results")
    table(f"extraction at {a.resolution}² on {summary['device_arg']}: {ips:.1f} img/s, "
          f"ceiling fraction {ips / ceiling:.2f}, {ips / naive:.1f}x naive", rows, [
              ("run", "run", ""), ("img/s", "images_per_s", ".1f"), ("batch", "batch", "d"),
              ("GPU busy", "gpu_busy_fraction", ".2f"), ("warm-up s", "warmup_seconds", ".1f")])
    print(json.dumps({k: summary[k] for k in ("stage_seconds_per_image", "gpu_memory_peak_gb")}, indent=1))
    print(path)


if __name__ == "__main__":
    main()
