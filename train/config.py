"""What `pipeline train` does, as one dataclass: its fields are the command's options, and the DDP
relaunch hands the same object (as JSON) to every process.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from hairdiff.core.devices import check_device
from hairdiff.core.errors import UsageError
from hairdiff.core.fields import (
    LOCAL,
    MAX_BATCH,
    MAX_THREADS,
    URL,
    at_least,
    at_most,
    check_paths,
    finite,
    option,
    seed_range,
)
from hairdiff.core.recipe import FULL

LOG_EVERY = 20
MAX_PREFETCH = 64  # batches read ahead (each held whole in memory)

# Settings a resumed run must share with the run it continues (anything else may change).
RESUME_KEYS = ("iters", "batch_size", "lr", "weight_decay", "seed", "grad_clip", "head_config", "crop", "val")


def parse_head_overrides(items: list[str]) -> dict:
    """--head NAME=VALUE items -> {NAME: value}; VALUE is read as JSON when it parses (numbers, true)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--head {item!r}: use NAME=VALUE, e.g. --head num_queries=50")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


@dataclass(kw_only=True)
class TrainConfig:
    cache: list[str] = option(flag="--cache", path=URL, help="feature store (repeatable; all must share one "
                                                   "fingerprint)")
    out: str = option(help="run folder: log.jsonl, checkpoints/, head.safetensors, run.json", path=LOCAL)
    iters: int = option(FULL.iters, help="optimizer steps")
    batch_size: int = option(FULL.batch_size, help="global batch size (split across --nproc processes)")
    lr: float = option(FULL.lr, help="AdamW base learning rate (poly decay, power 0.9)")
    weight_decay: float = option(FULL.weight_decay, help="AdamW weight decay")
    grad_clip: float = option(FULL.grad_clip, help="clip the full model's gradient norm to this (0: off)")
    seed: int = option(FULL.seed, help="seed of initialisation, sample order and point sampling")
    device: str = option("auto", help="auto (cuda if available) | cpu | cuda | cuda:N")
    ckpt_every: int = option(FULL.ckpt_every, help="write a checkpoint every N iterations")
    resume: bool = option(False, help="continue the run in --out from its last checkpoint")
    overwrite: bool = option(False, help="start again in an --out that already holds a run")
    nproc: int = option(1, help="data-parallel processes (DDP via torchrun; gloo on CPU, nccl on CUDA)")
    small: bool | None = option(None, help="a small head (hidden 64, 16 queries, 3 decoder layers, 2 encoder "
                                           "layers, 1024 points); default: on for CPU, off (the paper's "
                                           "Mask2Former) on CUDA")
    head: list[str] = option(factory=list, help="override a HeadConfig field, NAME=VALUE (repeatable), "
                                                "e.g. --head num_queries=50")
    workers: int = option(2, help="threads reading batches from the stores")
    prefetch: int = option(4, help="batches read ahead of the model")
    stop_at: int | None = option(None, help="stop after this iteration with a checkpoint (for time-limited "
                                            "slots); continue later with --resume")
    crop: int | None = option(None, help="train on random SIZE x SIZE crops (store pixels) of the cached maps and "
                                         "labels, placed on the coarsest stored stride's grid so every level is "
                                         "cut exactly (e.g. 384 for the unet taps at 512); default: whole maps")
    val: str | None = option(None, path=URL, help="validation store: scored like `pipeline eval` every --val-every "
                                        "iterations and at the end, logged and plotted; the best head (val mIoU) "
                                        "is kept in RUN/best/, which `pipeline eval` then prefers")
    val_every: int = option(1000, help="iterations between validations (with --val)")
    log_every: int | None = option(None, help="iterations between reads of the step's statistics from the device "
                                              "(loss, gradient norm, divergence check), at most --iters (it sizes "
                                              "the buffer the statistics wait in); log.jsonl still gets a row per "
                                              "iteration and every checkpoint and validation reads first. Default: "
                                              f"{LOG_EVERY}, or --iters when fewer")
    compile: bool = option(False, help="torch.compile the head's forward and the loss (minutes of compilation "
                                       "first; pays off on long GPU runs)")
    channels_last: bool = option(False, help="run the head's stride-4 stages (learned x2 upsampling, mask "
                                             "projection) in channels-last memory (a layout: same results)")

    def __post_init__(self):
        self.cache = [str(c) for c in self.cache]
        self.out = str(self.out)
        self.val = None if self.val is None else str(self.val)
        check_paths(self)
        if self.log_every is None and isinstance(self.iters, int):
            self.log_every = min(LOG_EVERY, max(1, self.iters))
        self.validate()

    def validate(self) -> None:
        """UsageError naming the first bad option; touches no file, store or model."""
        if not self.cache:
            raise UsageError("--cache is missing: pass a feature store (the last line `pipeline extract` prints)")
        at_least(self, 1, "iters", "batch_size", "ckpt_every", "nproc", "prefetch", "val_every", "stop_at", "crop",
                 "log_every")
        at_least(self, 0, "workers")
        finite(self, "lr", positive=True, hint="Mask2Former: 1e-4")
        finite(self, "weight_decay", hint="Mask2Former: 0.05")
        finite(self, "grad_clip", hint="0 turns clipping off; Mask2Former: 0.01")
        seed_range(self, "seed")
        at_most(self, self.iters, "--iters: the statistics of that many iterations wait on the device between "
                                 "reads", "log_every")
        at_most(self, MAX_BATCH, "a batch is held in memory whole", "batch_size")
        at_most(self, MAX_PREFETCH, "batches read ahead are held in memory", "prefetch")
        at_most(self, MAX_PREFETCH, "each reader thread holds a batch", "workers")
        at_most(self, MAX_THREADS, "each is a process of this machine", "nproc")
        if self.batch_size % self.nproc:
            raise UsageError(f"--batch-size {self.batch_size} is not divisible by --nproc {self.nproc}: choose a "
                             f"multiple of {self.nproc}")
        check_device(self.device)
        self.head_config("cpu")  # unknown or invalid --head settings fail here, before anything loads

    def head_config(self, device: str):
        """The HeadConfig this run trains: the small preset on CPU unless --no-small, then --head overrides."""
        from hairdiff.model.mask2former.head import build_head_config

        small = str(device).startswith("cpu") if self.small is None else self.small
        return build_head_config(parse_head_overrides(self.head), small=small)
