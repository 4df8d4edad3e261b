"""The head's training step alone: the step before the batched one ("old": per-sample losses, scipy on host
copies, finiteness checks every iteration) and the step `pipeline train` runs now ("new": train.step.TrainStep),
side by side in one process, alternating, keeping each side's best. Random features of the SD 1.x `unet`
shapes scaled to the resolution (a cost measurement, not a quality one).

Each step is split into forward (batch to the device, targets, the head), loss, backward (with gradient
clipping) and optimizer, timed with CUDA events on a GPU and the wall clock on the CPU; and the calls that
make the host wait for the device are counted per iteration (train.host_syncs.HostSyncCounter: item,
cpu, tolist, numpy, bool/float/int of a tensor, tensors built from Python data, value-sized outputs).

Layouts: `x2` mask features at stride 4 through the learned x2 stage (the default head), `s8` mask features
at stride 8 (heads before stride-4 mask features), `tap4` stride 4 from an extra VAE-encoder 512ch@4 tap.

    python bench/head_speed.py                      # GPU: paper-size head, 512, batch 16, bf16, all layouts
    python bench/head_speed.py --device cpu         # CPU: paper-size head, 256, batch 8, 2 threads, x2
    python bench/head_speed.py --device cpu --layouts x2,s8 --iters 3 --variants channels_last,compile
Writes bench/results/head_speed.json (or head_speed_cpu.json on the CPU).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import torch
from report import checkout_on_path, table, write

checkout_on_path()
from hairdiff.model.mask2former.batch_criterion import build_batch_criterion  # noqa: E402
from hairdiff.model.mask2former.criterion import batch_loss, build_criterion, sample_seed  # noqa: E402
from hairdiff.model.mask2former.head import HeadConfig, Mask2FormerHead, build_head_config, semantic_probs  # noqa: E402
from hairdiff.model.mask2former.targets import semantic_targets  # noqa: E402
from hairdiff.train.host_syncs import HostSyncCounter  # noqa: E402
from hairdiff.train.optim import build_optimizer, param_groups  # noqa: E402
from hairdiff.train.step import TrainStep  # noqa: E402

Lv = namedtuple("Lv", "name stride channels height width")
PHASES = ("forward", "loss", "backward", "optimizer")


def unet_levels(r: int, tap4: bool = False) -> list[Lv]:
    levels = [Lv("up_blocks.0", 32, 1280, r // 32, r // 32), Lv("up_blocks.1", 16, 1280, r // 16, r // 16),
              Lv("up_blocks.2", 8, 640, r // 8, r // 8), Lv("up_blocks.3", 8, 320, r // 8, r // 8)]
    return levels + ([Lv("vae_enc_s4", 4, 512, r // 4, r // 4)] if tap4 else [])


LAYOUTS = {"s8": ("unet, mask features at 8 (before)", False, {"mask_stride": None}),
           "x2": ("unet, learned x2 upsampling to 4", False, {}),
           "tap4": ("unet + VAE-enc 512@4 tap", True, {})}


def labels(n: int, r: int, seed: int = 0) -> torch.Tensor:
    """Hair ellipses with the bottom fifth ignored (letterbox padding); every fourth image without hair."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:r, :r]
    out = np.zeros((n, r, r), np.uint8)
    for b in range(n):
        cy, cx, ry, rx = rng.uniform(0.3 * r, 0.7 * r, 4) * [1, 1, 0.5, 0.5]
        if b % 4 != 3:
            out[b][((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] = 1
        out[b, r - r // 5:] = 255
    return torch.from_numpy(out)


class Clock:
    """Phase boundaries: CUDA events on a GPU (read after the step), the wall clock on the CPU, or with
    --clock cpu the process's CPU time (what a shared machine's other processes do not inflate much; with one
    thread it is the step's own work)."""

    cpu_time = False

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks = []

    def mark(self) -> None:
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            self.marks.append(e)
        else:
            self.marks.append(time.process_time() if self.cpu_time else time.perf_counter())

    def phases(self) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) / 1e3 for a, b in zip(self.marks, self.marks[1:])]
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


class OldStep:
    """The training iteration before the batched step, as train/loop.py ran it: unpinned copies, per-image
    targets, per-sample criterion with per-sample generators (scipy on a host copy of every cost matrix),
    foreach AdamW, and the loop's finiteness checks and log reads every iteration."""

    def __init__(self, head, cfg: HeadConfig, device: torch.device, grad_clip: float = 0.01):
        self.head, self.cfg, self.device = head, cfg, device
        self.criterion = build_criterion(cfg).to(device)
        self.optimizer = torch.optim.AdamW(param_groups(head, 0.05), lr=1e-4, weight_decay=0.05)
        self.grad_clip = grad_clip
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                         else torch.autocast("cpu", enabled=False))

    def run(self, batch: dict, it: int, clock: Clock) -> None:
        clock.mark()
        feats = {k: v.to(self.device, non_blocking=True).float() for k, v in batch["features"].items()}
        targets = semantic_targets(batch["labels"].to(self.device), num_classes=self.cfg.num_classes)
        with self.autocast:
            outputs = self.head(feats)
        clock.mark()
        seeds = [sample_seed(0, it, j) for j in range(len(targets))]
        loss, terms = batch_loss(self.criterion, outputs, targets, seeds, self.device)
        stats = torch.stack([loss.detach().float(), *terms.values()])
        if not bool(torch.isfinite(stats).all()):
            raise RuntimeError("non-finite loss")
        clock.mark()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.head.parameters(), self.grad_clip)
        if not bool(torch.isfinite(gnorm)):
            raise RuntimeError("non-finite gradient norm")
        clock.mark()
        self.optimizer.step()
        stats.tolist(), float(gnorm)  # the log row
        clock.mark()


class NewStep:
    """train.step.TrainStep, phase by phase, with the statistics left on the device (as the loop keeps them)."""

    def __init__(self, head, cfg: HeadConfig, device: torch.device, batch: int, **options):
        self.step = TrainStep(head, head, build_batch_criterion(cfg).to(device), build_optimizer(head, 1e-4, 0.05),
                              device=device, grad_clip=0.01, global_batch=batch, seed=0, **options)
        self.rows = []

    def run(self, batch: dict, it: int, clock: Clock) -> None:
        s = self.step
        clock.mark()
        outputs, targets = s.forward(batch)
        clock.mark()
        loss, terms = s.loss(outputs, targets, it, 0)
        clock.mark()
        gnorm = s.backward(loss)
        clock.mark()
        s.update()
        clock.mark()
        self.rows.append(torch.cat([loss.detach()[None], terms, gnorm[None]]))


def measure(layout: str, a, device: torch.device) -> list[dict]:
    name, tap4, overrides = LAYOUTS[layout]
    cfg = dataclasses.replace(build_head_config(small=a.small), **overrides)
    levels = unet_levels(a.resolution, tap4)
    g = torch.Generator().manual_seed(0)
    batch = {"features": {lv.name: torch.randn(a.batch, lv.channels, lv.height, lv.width, generator=g).half()
                          for lv in levels},
             "labels": labels(a.batch, a.resolution), "global_start": 0}
    sides = {}
    for kind in ("old", "new", *[f"new+{v}" for v in a.variants]):
        torch.manual_seed(0)
        head = Mask2FormerHead(levels, cfg).to(device).train()
        sides[kind] = (OldStep(head, cfg, device) if kind == "old" else
                       NewStep(head, cfg, device, a.batch, **{v: True for v in kind.split("+")[1:]}))
    best = {k: {"phases": [math.inf] * 4, "step": math.inf, "peak": 0.0} for k in sides}
    for it in range(a.warm + a.iters):
        for kind, side in sides.items():  # alternating: both sides see the same machine load
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            clock = Clock(device)
            side.run(batch, it, clock)
            phases = clock.phases()
            if it >= a.warm:
                b = best[kind]
                b["phases"] = [min(x, y) for x, y in zip(b["phases"], phases)]
                b["step"] = min(b["step"], sum(phases))
                if device.type == "cuda":
                    b["peak"] = max(b["peak"], torch.cuda.max_memory_allocated() / 2**30)
    rows = []
    for kind, side in sides.items():
        with HostSyncCounter() as counter:
            side.run(batch, a.warm + a.iters, Clock(torch.device("cpu")))
        b = best[kind]
        rows.append({"layout": name, "layout_key": layout, "step_kind": kind, "mask_stride": cfg.mask_stride or 8,
                     **{f"{p}_s": round(v, 4) for p, v in zip(PHASES, b["phases"])},
                     "step_s": round(b["step"], 4), "images_per_s": round(a.batch / b["step"], 2),
                     "host_syncs_per_iter": counter.total, "host_syncs": dict(counter.counts),
                     "peak_GiB": round(b["peak"], 2) if device.type == "cuda" else None,
                     "head_params_M": round(sum(p.numel() for p in side_head(side).parameters()) / 1e6, 2)})
    old = rows[0]
    for r in rows[1:]:
        r["speedup"] = {p: round(old[f"{p}_s"] / r[f"{p}_s"], 2) for p in (*PHASES, "step")}
        r["host_syncs_ratio"] = round(r["host_syncs_per_iter"] / max(old["host_syncs_per_iter"], 1), 4)
    if layout == "x2":
        rows[-1]["semantic_probs_s_batch"] = inference(side_head(sides["new"]), batch, device)
    return rows


def side_head(side) -> torch.nn.Module:
    return side.head if isinstance(side, OldStep) else side.step.head


def inference(head, batch: dict, device: torch.device) -> dict:
    """Semantic inference with logits upsampled first (ours) against probabilities first, batch as measured."""
    head.eval()
    r = batch["labels"].shape[-1]
    out = {}
    with torch.inference_mode():
        o = head({k: v.to(device).float() for k, v in batch["features"].items()})
        for order in ("logits_first", "probs_first"):
            clock = Clock(device)
            clock.mark()
            for _ in range(3):
                if order == "logits_first":
                    semantic_probs(o, out_size=(r, r))
                else:
                    torch.nn.functional.interpolate(semantic_probs(o), size=(r, r), mode="bilinear")
            clock.mark()
            out[order] = round(clock.phases()[0] / 3, 4)
    head.train()
    return out


def stage_profile(a, device: torch.device) -> dict:
    """Where the learned x2 stage's cost goes: its share of the head's forward FLOPs, its forward and backward
    alone (best of 3, NCHW and channels-last), and torch.profiler's top operators of one whole new step."""
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    cfg = build_head_config(small=a.small)
    levels = unet_levels(a.resolution)
    torch.manual_seed(0)
    head = Mask2FormerHead(levels, cfg).to(device).train()
    g = torch.Generator().manual_seed(0)
    feats = {lv.name: torch.randn(a.batch, lv.channels, lv.height, lv.width, generator=g).to(device)
             for lv in levels}
    with FlopCounterMode(display=False) as total:
        head(feats)
    stage = head.pixel_decoder.mask_upsample[0]
    x = torch.randn(a.batch, cfg.width, a.resolution // 8, a.resolution // 8, generator=g).to(device)
    with FlopCounterMode(display=False) as alone:
        stage(x)
    out = {"head_forward_GFLOP": round(total.get_total_flops() / 1e9, 1),
           "stage_forward_GFLOP": round(alone.get_total_flops() / 1e9, 1),
           "stage_flop_share": round(alone.get_total_flops() / total.get_total_flops(), 3)}
    for layout in ("nchw", "channels_last"):
        xin = x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x
        best = [math.inf, math.inf]
        for _ in range(3):
            clock = Clock(device)
            clock.mark()
            y = stage(xin.requires_grad_(True))
            clock.mark()
            y.float().square().mean().backward()
            clock.mark()
            best = [min(b, t) for b, t in zip(best, clock.phases())]
        out[f"stage_{layout}_forward_s"], out[f"stage_{layout}_backward_s"] = (round(t, 4) for t in best)
    step = NewStep(head, cfg, device, a.batch)
    batch = {"features": {k: v.half().cpu() for k, v in feats.items()}, "labels": labels(a.batch, a.resolution),
             "global_start": 0}
    step.run(batch, 0, Clock(device))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step.run(batch, 1, Clock(device))
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    top = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)[:12]
    out["step_top_ops"] = [{"op": e.key, "calls": e.count, "self_s": round(getattr(e, key) / 1e6, 4)} for e in top]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto (cuda if available) | cpu | cuda | cuda:N")
    ap.add_argument("--resolution", type=int, default=None, help="default: 512 on a GPU, 256 on the CPU")
    ap.add_argument("--batch", type=int, default=None, help="default: 16 on a GPU, 8 on the CPU")
    ap.add_argument("--layouts", default=None, help=f"comma-separated of {', '.join(LAYOUTS)}; default: all on a "
                                                    f"GPU, x2 on the CPU")
    ap.add_argument("--iters", type=int, default=None, help="timed iterations per side (default: 10 GPU, 3 CPU)")
    ap.add_argument("--warm", type=int, default=None, help="untimed first iterations (default: 3 GPU, 1 CPU)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="CPU timing: wall clock, or process CPU time (for a busy shared machine, with --threads 1)")
    ap.add_argument("--small", action="store_true", help="the small head instead of the paper's")
    ap.add_argument("--variants", default="", help="extra new-step rows, comma-separated TrainStep options: "
                                                   "channels_last, compile, or both joined by '+'")
    ap.add_argument("--profile", action="store_true", help="add the x2 stage's profile (FLOP share, forward and "
                                                           "backward alone, top operators of a step) to the JSON")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    a = ap.parse_args()
    a.variants = [v for v in a.variants.split(",") if v]
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          "cpu" if a.device == "auto" else a.device)
    gpu = device.type == "cuda"
    a.resolution = a.resolution or (512 if gpu else 256)
    a.batch = a.batch or (16 if gpu else 8)
    a.iters = a.iters or (10 if gpu else 3)
    a.warm = a.warm if a.warm is not None else (3 if gpu else 1)
    layouts = (a.layouts or ("s8,x2,tap4" if gpu else "x2")).split(",")
    Clock.cpu_time = not gpu and a.clock == "cpu"
    if not gpu:
        torch.set_num_threads(a.threads)
        torch.use_deterministic_algorithms(True)  # as pipeline train runs on the CPU
    rows = [r for layout in layouts for r in measure(layout, a, device)]
    summary = {"device_arg": str(device), "batch": a.batch, "resolution": a.resolution, "iters": a.iters,
               "warm": a.warm, "threads": None if gpu else a.threads, "head": "small" if a.small else "paper",
               "timing": "CUDA events" if gpu else f"{a.clock} clock", "best_of": a.iters,
               "note": "old and new alternate in one process; each side's best iteration (and best per phase)"}
    if a.profile:
        summary["x2_stage"] = stage_profile(a, device)
        prof = summary["x2_stage"]
        print({k: v for k, v in prof.items() if k != "step_top_ops"})
        for op in prof["step_top_ops"]:
            print(f"  {op['op']:<40} {op['calls']:>6} calls {op['self_s']:>9.3f} s")
    path = write("head_speed" if gpu else "head_speed_cpu", rows, summary, a.out)
    table(f"head training step, batch {a.batch} at {a.resolution}², {device} (best of {a.iters}, alternating)", rows, [
        ("layout", "layout_key", ""), ("step", "step_kind", ""), ("forward s", "forward_s", ".3f"),
        ("loss s", "loss_s", ".3f"), ("backward s", "backward_s", ".3f"), ("optimizer s", "optimizer_s", ".4f"),
        ("step s", "step_s", ".3f"), ("img/s", "images_per_s", ".2f"), ("host syncs/iter", "host_syncs_per_iter", "d"),
        ("peak GiB", "peak_GiB", ".1f")])
    ratios = [{"layout_key": r["layout_key"], "step_kind": r["step_kind"], **r["speedup"],
               "syncs": r["host_syncs_ratio"]} for r in rows if "speedup" in r]
    table("old / new (x faster; host syncs: new / old)", ratios, [
        ("layout", "layout_key", ""), ("step", "step_kind", ""), *[(p, p, ".2f") for p in (*PHASES, "step")],
        ("syncs new/old", "syncs", ".3f")])
    print(path)


if __name__ == "__main__":
    main()
