"""The paper's recipe, written in one place: what `pipeline reproduce` extracts, trains and scores.

The paper (Kim et al.) fixes the backbone (SD v1-3, timestep 0, "A photo of a hair.") and the head
(Mask2Former) but not the schedule, the splits or the augmentation; those follow Mask2Former's semantic
recipe (AdamW 1e-4, weight decay 0.05 and 0 on norms and embeddings, poly 0.9, clip 0.01, batch 16,
scale jitter + crop + flip) as ODISE, which the paper's setup follows, does. Augmentation is cached as
extracted views (flip and two scales) plus random crops of the cached maps in training.

Splits: Figaro-1k Training / Testing (840 / 210); CelebAMask-HQ the official train / test of CelebA's
partition (needs the partition files, extract/readers/celebamask.py); Face Synthetics our deterministic
split by id (extract/readers/facesynthetics.py: id % 10 == 9 is test). A root without the test split gets a
stand-in: the last 20% of the training split (in id order) held out, said in the report.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

SPLITS = {"figaro": ("Training", "Testing"), "celebamask": ("train", "test"), "facesynthetics": ("train", "test")}
HELD_OUT = 0.2  # share of the training split held out when the root has no test split


@dataclass(frozen=True)
class Recipe:
    model: str = "CompVis/stable-diffusion-v1-3"
    resolution: int = 512
    timestep: int = 0
    prompt: str = "A photo of a hair."
    taps: str = "unet"
    views: str | None = "flip+scale:0.75,1.25"
    iters: int = 20000
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.05
    grad_clip: float = 0.01
    crop: int | None = 384
    small: bool = False
    ckpt_every: int = 1000

    def as_dict(self) -> dict:
        return asdict(self)


PAPER = Recipe()
# `--model tiny`: the same steps at a size a CPU runs in minutes; its numbers say nothing about the method.
SMOKE = Recipe(model="tiny", resolution=128, views="flip", iters=60, batch_size=4, lr=1e-3, crop=96, small=True,
               ckpt_every=30)


def recipe_for(model: str) -> Recipe:
    from dataclasses import replace

    return SMOKE if model == "tiny" else replace(PAPER, model=model)
