"""The reproduction recipe: every default the stages share, each with its source, in one place.

The paper (Kim et al., IV.A-C) fixes only the backbone (latent diffusion v1-3, frozen), the prompt "A photo
of a hair.", timestep 0, multi-scale features of the diffusion UNet, the head (Mask2Former with its BCE and
dice losses), the datasets and the four metrics. Every other setting here is taken from Mask2Former's ADE20K
semantic-segmentation config (configs/ade20k/semantic-segmentation/Base-ADE20K-SemanticSegmentation.yaml and
its mapper), from NVlabs/ODISE (which feeds Stable Diffusion features to a Mask2Former head), or is our
choice, and says so: each field of Recipe carries its source and the stage whose config takes it.

The stages' configs take their defaults from FULL (ExtractConfig's model and prompt, TrainConfig's schedule
and optimizer), so a default is written once; hairdiff.experiments.recipes prints the table of sources.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

PAPER, M2F, ODISE, OURS = "paper", "Mask2Former", "ODISE", "ours"
SMOKE_RUN, OPTION = "smoke run", "your option"
M2F_CONFIG = "ADE20K semantic config (Base-ADE20K-SemanticSegmentation.yaml)"


@dataclass(frozen=True)
class Source:
    kind: str  # paper | Mask2Former | ODISE | ours | smoke run | your option
    where: str  # the section or file it comes from, or the reason for our choice


def setting(default, kind: str, where: str, stage: str):
    """A Recipe field with its source and the stage whose config takes it (the field of the same name of
    ExtractConfig, TrainConfig, or both)."""
    return field(default=default, metadata={"source": Source(kind, where), "stage": stage})


@dataclass(frozen=True)
class Recipe:
    model: str = setting("CompVis/stable-diffusion-v1-3", PAPER, "IV.A: latent diffusion model v1-3, kept frozen",
                         "extract")
    prompt: str = setting("A photo of a hair.", PAPER, "IV.A: the word 'hair' in the prompt 'A photo of a hair.'",
                          "extract")
    timestep: int = setting(0, PAPER, "IV.A: the best results were at T = 0, which the paper reports", "extract")
    taps: str = setting("unet", OURS, "the paper takes multi-scale features of the diffusion UNet (III.B, Fig. 4) "
                                      "without naming blocks: the decoder's up-block outputs at strides 32/16/8/8; "
                                      "ODISE's taps are `--taps odise`", "extract")
    resolution: int = setting(512, OURS, "the paper gives none: Stable Diffusion v1's training size, equal to "
                                         "Mask2Former's ADE20K crop (512)", "extract")
    views: str | None = setting("flip+scale:0.75,1.25", OURS,
                                "a cached stand-in for Mask2Former's per-sample jitter (short edge 0.5-2x of 512, "
                                "512 crop, colour, flip): 4 samples per image, so 4x the store and the extraction; "
                                "ODISE's lsj and Mask2Former's colour jitter are `lsj:K`, `color:K`", "extract")
    crop: int | None = setting(384, OURS, "Mask2Former crops 512 from rescaled images; the cache holds each view "
                                          "at 512 already, so crops of 3/4 of it move the window", "train")
    batch_size: int = setting(16, M2F, f"{M2F_CONFIG}: SOLVER.IMS_PER_BATCH 16 (ODISE: 64)", "train")
    iters: int = setting(20000, OURS, "Mask2Former trains ADE20K's 20k images 160k iterations (ODISE ~92k at "
                                      "batch 64): 20k x 16 is ~380 passes over Figaro's 840 cached images, ~13 over "
                                      "CelebAMask-HQ's 24k", "train")
    lr: float = setting(1e-4, M2F, f"{M2F_CONFIG}: AdamW, BASE_LR 0.0001", "train")
    weight_decay: float = setting(0.05, M2F, f"{M2F_CONFIG}: WEIGHT_DECAY 0.05", "train")
    grad_clip: float = setting(0.01, M2F, f"{M2F_CONFIG}: CLIP_GRADIENTS full_model 0.01", "train")
    small: bool = setting(False, M2F, "the head at Mask2Former's size (100 queries, hidden 256, 9 decoder layers)",
                          "train")
    seed: int = setting(0, OURS, "any fixed seed: the noise tensor, the views' draws, initialisation and order",
                        "both")
    ckpt_every: int = setting(1000, OURS, "how often a checkpoint is written; results do not depend on it", "train")

    def as_dict(self) -> dict:
        return asdict(self)


FULL = Recipe()
# `--model tiny`: the same steps at a size a CPU runs in minutes; its numbers say nothing about the method.
SMOKE = Recipe(model="tiny", resolution=128, views="flip", iters=60, batch_size=4, lr=1e-3, crop=96, small=True,
               ckpt_every=30)
SMOKE_WHY = "a CPU-sized stand-in for --model tiny: every step runs, the numbers mean nothing"
