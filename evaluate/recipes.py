"""The reproduction recipe in one place: what `pipeline reproduce` extracts, trains and scores, and where each
setting comes from.

The paper (Kim et al., IV.A-C) fixes only the backbone (latent diffusion v1-3, frozen), the prompt "A photo
of a hair.", timestep 0, multi-scale features of the diffusion UNet, the head (Mask2Former with its BCE and
dice losses), the datasets and the four metrics. It gives no schedule, batch, learning rate, resolution,
augmentation or split. Every other setting here is taken from Mask2Former's ADE20K semantic-segmentation
config (configs/ade20k/semantic-segmentation/Base-ADE20K-SemanticSegmentation.yaml and its mapper), from
NVlabs/ODISE (which feeds Stable Diffusion features to a Mask2Former head), or is our choice, and says so:
each field of Recipe carries its source, and FIXED lists what the code fixes outside the recipe's options.
`provenance()` is the table `pipeline reproduce` prints and report.md holds.

Splits: Figaro-1k Training / Testing (840 / 210, as published); CelebAMask-HQ the official train / test of
CelebA's partition (needs the partition files, extract/readers/celebamask.py); Face Synthetics our
deterministic split by id (none is published: extract/readers/facesynthetics.py, id % 10 == 9 is test). A
root without the test split gets a stand-in: the last 20% of the training split (in id order) held out, said
in the report.
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field

SPLITS = {"figaro": ("Training", "Testing"), "celebamask": ("train", "test"), "facesynthetics": ("train", "test")}
HELD_OUT = 0.2  # share of the training split held out when the root has no test split

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


def _fixed(recipe: Recipe) -> list[tuple[str, str, Source]]:
    """What the code fixes outside the recipe's options, read from the code that fixes it."""
    from hairdiff.train.mask2former.head import build_head_config
    from hairdiff.train.schedule import POLY_POWER

    h = build_head_config(small=recipe.small)
    head_source = (Source(SMOKE_RUN, f"the small preset (`small`); {SMOKE_WHY}") if recipe.small else
                   Source(M2F, "maskformer2_R50_bs16_160k defaults; the paper: Mask2Former"))
    loss_source = head_source if recipe.small else Source(M2F, "its criterion; the paper: BCE + dice")
    return [
        ("noise", "one fixed seeded noise tensor, VAE posterior mean x 0.18215", Source(ODISE, "its SD feature "
                                                                                       "extractor at t = 0")),
        ("preprocessing", "letterbox to the resolution, top-left, pad 0 / ignore", Source(OURS, "keeps the whole "
                                                                                         "image; an exact inverse")),
        ("levels", f"strides clamped to {list(h.stride_range)}, levels of one stride summed",
         Source(ODISE, "its projection of the SD taps")),
        ("head", f"{h.num_queries} queries, hidden {h.hidden_dim}, {h.dec_layers} decoder + {h.enc_layers} "
                 f"deformable encoder layers, mask features at stride {h.mask_stride}", head_source),
        ("loss", f"class {h.class_weight:g}, mask BCE {h.mask_weight:g}, dice {h.dice_weight:g}, no-object "
                 f"{h.no_object_weight:g}, {h.num_points} points", loss_source),
        ("optimizer", "AdamW, no weight decay on norms and embeddings", Source(M2F, "build_optimizer")),
        ("schedule", f"poly, power {POLY_POWER:g}, no warm-up", Source(M2F, f"{M2F_CONFIG}: WarmupPolyLR, "
                                                                            "WARMUP_ITERS 0")),
        ("inference", "mask logits upsampled, then sigmoid x class softmax", Source(M2F, "semantic_inference")),
        ("splits", "the dataset's published split (Face Synthetics: ours by id)", Source(OURS, "the paper names "
                                                                                         "no split")),
        ("metrics", "mIoU, accuracy, precision, F1, pooled and per-image mean", Source(PAPER, "IV.C eq. 7-10 "
                                                                                       "(\"mean values\", not said "
                                                                                       "over what)")),
    ]


def provenance(recipe: Recipe, model: str | None = None, iters: int | None = None) -> list[dict]:
    """Every setting of `recipe` with its value and source: a field that differs from FULL is the smoke run's
    (SMOKE) or the user's (--model, --iters); then the settings the code fixes."""
    rows = []
    for f in dataclasses.fields(Recipe):
        value = getattr(recipe, f.name)
        src: Source = f.metadata["source"]
        if (f.name, value) in (("model", model), ("iters", iters)) and value != getattr(FULL, f.name):
            src = Source(OPTION, f"--{f.name} (full recipe: {getattr(FULL, f.name)})")
        elif value != getattr(FULL, f.name) and recipe.model == "tiny":
            src = Source(SMOKE_RUN, f"{SMOKE_WHY} (full recipe: {getattr(FULL, f.name)})")
        rows.append({"setting": f.name, "value": value, "source": src.kind, "where": src.where})
    for name, value, src in _fixed(recipe):
        rows.append({"setting": name, "value": value, "source": src.kind, "where": src.where})
    return rows


def table(rows: list[dict]) -> list[str]:
    """The provenance rows as a Markdown table."""
    out = ["| setting | value | source | where / why |", "|---|---|---|---|"]
    return out + [f"| {r['setting']} | {r['value']} | {r['source']} | {r['where']} |" for r in rows]


def recipe_for(model: str) -> Recipe:
    return SMOKE if model == "tiny" else dataclasses.replace(FULL, model=model)
