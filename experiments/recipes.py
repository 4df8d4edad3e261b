"""The recipe's table of sources: what `pipeline reproduce` and `pipeline sweep` print and their reports hold.

The recipe itself (every default with its source) is core/recipe.py, where the stages' configs read their
defaults; this module adds what the code fixes outside the recipe's options (read from the code that fixes
it) and marks the rows a smoke run or a user's option changed. Splits: each dataset's reader says which of
its splits the paper trains and tests on (extract/readers/registry.py); a root without the test split gets
a stand-in, the last 20% of the training split (in id order) held out, said in the report.
"""
from __future__ import annotations

import dataclasses

from hairdiff.core.recipe import (FULL, M2F, M2F_CONFIG, ODISE, OPTION, OURS, PAPER, SMOKE, SMOKE_RUN, SMOKE_WHY,
                                  Recipe, Source)

HELD_OUT = 0.2  # share of the training split held out when the root has no test split


def _fixed(recipe: Recipe) -> list[tuple[str, str, Source]]:
    """What the code fixes outside the recipe's options, read from the code that fixes it."""
    from hairdiff.model.mask2former.head import build_head_config
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
                 f"{h.no_object_weight:g}, {h.num_points} points; mask terms over the global batch's masks, class "
                 "term its weighted mean", loss_source),
        ("ignore pixels", f"`{h.ignore_pixels}`: no loss, no matching cost (a point whose footprint touches one "
                          "weighs 0)",
         Source(OURS, "Mask2Former counts them as negatives of every mask (`--head ignore_pixels=negative`); an "
                      "ignore pixel's class is unknown (letterbox padding, a view's canvas, an unlabelled border), "
                      "and as a negative it teaches that padding is background, which no test pixel needs; "
                      "BENCHMARKS.md compares both")),
        ("lsj views", "mirror p 1/2, bilinear resize x U(0.1, 2.0) of the frame, one crop offset fraction",
         Source(ODISE, "configs/common/data/coco_panoptic_semseg.py (detectron2 RandomFlip, ResizeScale, "
                       "FixedSizeCrop); `--views lsj:K`")),
        ("view canvas", "a view smaller than its frame is padded 0 (label: ignore)",
         Source(OURS, "ODISE's FixedSizeCrop pads 128 (about 0 after SD's normalisation); our letterbox pads every "
                      "image, training and test, with 0, and one padding value is what the backbone sees "
                      "everywhere")),
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
