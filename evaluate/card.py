"""The model card of a portable model folder (README.md): the facts gathered from the run when the head leaves
it (`card_facts`, kept in config.json's `card`, so a folder re-saved anywhere says the same) and their text
(`card_text`).

The facts: the evaluation of this very head (`pipeline eval`'s metrics.json beside the run, or --metrics) with
what it was measured on; the recipe with each setting's source (`pipeline reproduce`'s report.json when the run
came from it, else the run's own config.json and the features' settings, each compared with core/recipe.py);
the training data; and whether the backbone is the random-weight `tiny` model, in which case the card's first
line says its numbers mean nothing.
"""
from __future__ import annotations

from pathlib import Path

from huggingface_hub import EvalResult

from hairdiff.core.errors import UsageError
from hairdiff.core.files import file_sha256
from hairdiff.core.recipe import FULL, OURS, SMOKE_RUN, Recipe, Source
from hairdiff.evaluate.metrics import METRICS, PER_IMAGE_KEYS, TABLE_KEYS
from hairdiff.evaluate.report import RANDOM_WEIGHTS, coverage_text, fmt
from hairdiff.model.records import read_run_record

THIS_RUN = "this run"
FIX_METRICS = "pass --metrics with the metrics.json `pipeline eval` wrote for this head, or run `pipeline eval` again"
TINY_LINE = ("**The numbers on this card mean nothing: the backbone is `tiny`, hairdiff's random-weight stand-in for "
             "Stable Diffusion, so this head learned from random features. It shows that every step runs, not how "
             "well the method segments hair.**")


def card_facts(run_dir: Path, source: dict, metrics: str | None = None) -> dict:
    """What the card says about the head `source` names (model.trained.head_source's answer) of the run in
    `run_dir`. metrics: the metrics.json of its evaluation (None: RUN/eval/ or the eval/ beside RUN, as `pipeline
    reproduce` and `pipeline demo` lay them out, when it scored this head)."""
    run_dir = Path(run_dir)
    meta = source["meta"]
    fi = meta["fingerprint_inputs"]
    return {"run": str(run_dir), "name": run_dir.resolve().parent.name if run_dir.name == "run" else run_dir.name,
            "backbone": fi["model"], "random_weights": fi["model"].get("kind") == "tiny",
            "features": {k: fi.get(k) for k in ("prompt", "timestep", "taps", "resolution", "compute_dtype",
                                                 "store_precision")},
            "evaluation": evaluation(run_dir, source, metrics), "recipe": recipe(run_dir, meta),
            "training_data": [{k: s.get(k) for k in ("dataset", "split", "root", "url", "data_key")}
                              for s in meta.get("stores", [])]}


# ------------------------------------------------------------------------------------------ evaluation
def _same_head(scored: dict, source: dict, weights_sha256: str | None, named: bool) -> bool:
    """Whether an evaluation scored these very weights: by their content (run folders repeat file names and
    iterations: another run's eval/ beside this one would pass for it). An evaluation written before eval recorded
    the digest counts only where the user names it (--metrics), by which head and iteration it scored."""
    if scored.get("weights_sha256"):
        return scored["weights_sha256"] == weights_sha256
    return named and (scored.get("source") == source["source"] and scored.get("iteration") == source.get("iteration")
                      and Path(str(scored.get("weights"))).name == Path(source["weights"]).name)


def evaluation(run_dir: Path, source: dict, metrics: str | None) -> dict | None:
    """The scores of this head with what they were measured on, or None when no evaluation of it is found. An
    explicit `metrics` file that is missing or scored other weights is a UsageError."""
    candidates = [Path(metrics)] if metrics else [run_dir / "eval" / "metrics.json",
                                                  run_dir.parent / "eval" / "metrics.json"]
    weights_sha256 = file_sha256(source["weights"])
    for path in candidates:
        if not path.is_file():
            if metrics:
                raise UsageError(f"--metrics {path}: no such file: {FIX_METRICS}")
            continue
        m = read_run_record(path, FIX_METRICS, error=UsageError)
        scored = m.get("head") or {}
        if not _same_head(scored, source, weights_sha256, named=bool(metrics)):
            if metrics:
                raise UsageError(f"--metrics {path} scores other weights ({scored.get('weights')}, iteration "
                                 f"{scored.get('iteration')}) than the ones exported ({source['weights']}, iteration "
                                 f"{source.get('iteration')}): {FIX_METRICS}")
            continue  # an evaluation of another head (an earlier one of this run, or another run's): not its numbers
        per_image = m.get("per_image_mean") or {}
        return {"file": str(path), "dataset": m.get("dataset"), "split": m.get("split"), "store": m.get("store"),
                "images": m.get("images"), "images_total": m.get("images_total"), "coverage": coverage_text(m),
                "pooled": {k: m.get(k) for k in TABLE_KEYS}, "per_image_mean": {k: per_image.get(k)
                                                                                for k in PER_IMAGE_KEYS},
                **{k: m.get(k) for k in ("cross_dataset", "evaluated_on_training_store", "training_images",
                                         "random_weight_backbone")}}
    return None


# ---------------------------------------------------------------------------------------------- recipe
def recipe(run_dir: Path, meta: dict) -> dict:
    """{"from": where the rows come from, "rows": [{setting, value, source, where}]}."""
    report = run_dir.parent / "report.json"
    if run_dir.name == "run" and report.is_file():
        r = read_run_record(report, "run the same `pipeline reproduce` command again to rewrite it", error=UsageError)
        if isinstance(r.get("provenance"), list) and Path(str(r.get("run"))).name == run_dir.name:
            return {"from": f"{report} (`pipeline reproduce`)", "rows": r["provenance"]}
    config = run_dir / "config.json"
    cfg = read_run_record(config, "restore it from the run", error=UsageError).get("config", {}) \
        if config.is_file() else {}
    return {"from": f"the run's {config.name} and the features' settings recorded with the head, each compared with "
                    "hairdiff's recipe (core/recipe.py)", "rows": own_rows(meta, cfg)}


def _row(name: str, value, recipe_value, where: str, source: Source | None = None) -> dict:
    """A setting with its source: the recipe's own when the run used the recipe's value, else this run's."""
    if source is None:
        source = (Recipe.__dataclass_fields__[name].metadata["source"] if value == recipe_value
                  else Source(THIS_RUN, f"{where} (the recipe's: {recipe_value})"))
    return {"setting": name, "value": value, "source": source.kind, "where": source.where}


def own_rows(meta: dict, cfg: dict) -> list[dict]:
    """The recipe's settings as a run that did not come from `pipeline reproduce` used them."""
    from hairdiff.extract.taps import TAP_SETS
    from hairdiff.model.mask2former.head import build_head_config
    from hairdiff.model.trained import head_config_from_dict

    fi, rows = meta["fingerprint_inputs"], []
    model = fi["model"]
    if model.get("kind") == "tiny":
        rows.append(_row("model", f"tiny ({model.get('name')})", FULL.model, "",
                         Source(SMOKE_RUN, "hairdiff's random-weight stand-in of the SD architecture: nothing "
                                           "learned")))
    else:
        rows.append(_row("model", model.get("name"), FULL.model, "the backbone the features came from"))
    taps = next((name for name, names in TAP_SETS.items() if names == fi.get("taps")), ",".join(fi.get("taps", [])))
    for name, value in (("prompt", fi.get("prompt")), ("timestep", fi.get("timestep")), ("taps", taps),
                        ("resolution", fi.get("resolution")), ("seed", (fi.get("noise") or {}).get("seed"))):
        rows.append(_row(name, value, getattr(FULL, name), "the features' settings"))
    for name in ("crop", "batch_size", "iters", "lr", "weight_decay", "grad_clip"):
        if name in cfg:
            rows.append(_row(name, cfg[name], getattr(FULL, name), "the run's config.json"))
    head = head_config_from_dict(meta["head_config"])
    if head == build_head_config():
        rows.append(_row("head", "Mask2Former's size", None, "", Source("Mask2Former", "maskformer2_R50_bs16_160k")))
    else:
        rows.append(_row("head", f"{head.num_queries} queries, hidden {head.hidden_dim}, {head.dec_layers} decoder "
                                 f"layers", "100 queries, hidden 256, 9 decoder layers", "the run's head config",
                         Source(SMOKE_RUN if head == build_head_config(small=True) else OURS,
                                "the small preset (CPU-sized)" if head == build_head_config(small=True)
                                else "the run's --head settings")))
    return rows


# --------------------------------------------------------------------------------------------- metadata
def eval_results(card: dict) -> list[EvalResult] | None:
    """The evaluation as the Hub's model-index (the card's YAML, which the Hub shows and indexes): the pooled
    scores in percent. None where they would mislead whoever reads metadata without the text: no evaluation, a
    random-weight backbone, or scores on images the head was trained on."""
    ev = card.get("evaluation")
    if ev is None or card["random_weights"] or ev.get("evaluated_on_training_store"):
        return None
    return [EvalResult(task_type="image-segmentation", task_name="hair segmentation", dataset_type=str(ev["dataset"]),
                       dataset_name=str(ev["dataset"]), dataset_split=ev.get("split"), metric_type=m.hub,
                       metric_name=f"{m.label} (pooled)", metric_value=round(float(ev["pooled"][m.key]), 2))
            for m in METRICS if ev["pooled"].get(m.key) is not None]


# ------------------------------------------------------------------------------------------------ text
def evaluation_lines(ev: dict | None, keys=TABLE_KEYS) -> list[str]:
    if ev is None:
        return ["Not evaluated: no `pipeline eval` of this head was found beside its run. Score it with `pipeline "
                "eval --run RUN --cache TEST_STORE --out EVAL`, then export again with `--metrics EVAL/metrics.json`."]
    labels = {m.key: m.label for m in METRICS}
    lines = [f"Measured on {ev['dataset']} / {ev['split']}: {ev['coverage']}, at each annotation's own resolution "
             f"(`pipeline eval`, {ev['file']}; store `{ev['store']}`)."]
    if ev.get("random_weight_backbone"):
        lines[0] += f" The backbone has random weights: {RANDOM_WEIGHTS.split(': ', 1)[1]}."
    if ev.get("evaluated_on_training_store"):
        lines.append(f"**Warning: evaluated on training data** ({ev.get('training_images')} of the images were "
                     "trained on): these numbers measure fit.")
    if ev.get("cross_dataset"):
        lines.append("Cross-dataset: the head was trained on another dataset than it was scored on.")
    lines += ["", "| reading | " + " | ".join(labels[k] for k in keys) + " |", "|---|" + "---|" * len(keys),
              "| pooled | " + " | ".join(fmt(ev["pooled"].get(k)) for k in keys) + " |",
              "| per-image mean | " + " | ".join(fmt(ev["per_image_mean"].get(k)) if k in ev["per_image_mean"]
                                                 else "-" for k in keys) + " |",
              "", "Pooled: one confusion matrix over all the split's pixels; per-image mean: each image scored alone, "
                  "then averaged (the paper's equations 7-10, as hairdiff's README reads them)."]
    return lines


def _backbone_text(model: dict) -> tuple[str, str]:
    """(what it is, where `from_pretrained` gets it)."""
    kind, name = model.get("kind"), model.get("name")
    if kind == "tiny":
        return f"`tiny` ({name}), a random-weight model", "hairdiff builds it on first use, nothing to download"
    if kind == "hub":
        return f"`{name}`", (f"downloaded from the Hugging Face Hub by its id `{name}` (revision "
                             f"{model.get('revision')})")
    return f"a local model `{name}`", (f"not in this folder: pass its folder, `from_pretrained(..., "
                                       f"model=\"/path/{name}\")`")


def card_text(card: dict, head: dict, where: str = "DIR") -> str:
    """The card's Markdown body (the YAML metadata is the caller's: huggingface_hub writes it)."""
    f = card["features"]
    backbone, fetched = _backbone_text(card["backbone"])
    taps = ", ".join(f.get("taps") or [])
    lines = [TINY_LINE, ""] if card["random_weights"] else []
    lines += [f"# Hair segmentation: {card['name']}", "",
              f"A Mask2Former head trained on frozen features of {backbone}, by hairdiff (after Kim et al., "
              f"\"Diffusion-based hair segmentation\"): one backbone pass per image at timestep {f.get('timestep')} "
              f"with the prompt \"{f.get('prompt')}\", the features of {taps} at {f.get('resolution')} px "
              f"(letterboxed), the head's masks mapped back to each image's own pixels. Weights: the "
              f"{head.get('source')} head of the run `{card['run']}` (iteration {head.get('iteration')}).", "",
              "## Use", "", "```python", "from hairdiff import HairSegmenter", "",
              f"segmenter = HairSegmenter.from_pretrained(\"{where}\")",
              "result = segmenter(\"photo.jpg\")  # .mask: uint8 (H, W), 1 = hair; .probability: float32 (H, W)",
              "```", "", f"The backbone is not in this folder: {fetched}.", "", "## Evaluation", ""]
    lines += evaluation_lines(card["evaluation"])
    lines += ["", "## Recipe", "", f"From {card['recipe']['from']}.", "",
              "| setting | value | source | where / why |", "|---|---|---|---|"]
    lines += [f"| {r['setting']} | {r['value']} | {r['source']} | {r['where']} |" for r in card["recipe"]["rows"]]
    lines += ["", "## Training data", "", "| dataset | split | root | store | data key |", "|---|---|---|---|---|"]
    lines += [f"| {s['dataset']} | {s['split']} | {s['root']} | {s['url']} | {str(s['data_key'])[:12]} |"
              for s in card["training_data"]]
    datasets = ", ".join(sorted({str(s["dataset"]) for s in card["training_data"]})) or "its training data"
    lines += ["", "## Intended use", "",
              f"Binary hair segmentation (hair against everything else) of photos like those it was trained on "
              f"({datasets}), for research: the public hair datasets (Figaro-1k, CelebAMask-HQ) are for research use "
              "only.", "", "## Limits", ""]
    if card["random_weights"]:
        lines.append(f"- Not a model of hair: {RANDOM_WEIGHTS}. Train on real Stable Diffusion features for one.")
    lines += ["- Measured only on the data above; other photos (other lighting, ages, hair styles and colours, skin "
              "tones, drawings) are untested.",
              f"- Two classes; each image is letterboxed to {f.get('resolution')} x {f.get('resolution')} px for the "
              "backbone, so strands finer than the head's stride at that scale are blurred.",
              f"- Needs the backbone it was trained on ({backbone}); its own licence and limits apply "
              "(Stable Diffusion v1: CreativeML OpenRAIL-M)."]
    return "\n".join(lines) + "\n"
