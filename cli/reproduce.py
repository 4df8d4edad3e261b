"""`pipeline reproduce`: the paper's setup for one dataset, end to end; the report's path as the last line."""
from __future__ import annotations

from pathlib import Path

from hairdiff.cli.progress import err, rich_progress
from hairdiff.experiments.config import ReproduceConfig


def reproduce(cfg: ReproduceConfig) -> None:
    """Extract a dataset's training and test splits, train the head, score it, and report beside the paper.

    The paper fixes the backbone (SD v1-3, frozen), prompt, timestep, head (Mask2Former) and datasets; the rest
    of the recipe follows Mask2Former's ADE20K semantic config, NVlabs/ODISE, or our choices, and the table
    printed first gives every setting with its source (core/recipe.py). Writes OUT/report.md and
    OUT/report.json (our pooled and per-image rows beside the paper's), OUT/eval/ (metrics, overlays) and
    OUT/run/. Running the same command again resumes where it stopped. With --model tiny --limit N it is a
    CPU smoke run of every step.
    """
    from hairdiff.core.errors import Interrupted
    from hairdiff.evaluate.report import coverage_text, interval_of, interval_text
    from hairdiff.experiments.reproduce import reproduce as run

    kept: dict = {}
    try:
        rep = run(cfg, progress=rich_progress, log=lambda message: err.print(message, markup=False, highlight=False),
                  kept=kept)
    except KeyboardInterrupt:
        raise Interrupted(_what_was_kept(kept)) from None
    m, p = rep["metrics"], rep["metrics"]["per_image_mean"]
    iv = interval_of(m, "pooled", "mIoU")
    ci = f" (95% interval {interval_text(iv)})" if iv else ""
    err.print(f"{rep['dataset']}: mIoU {m['mIoU']:.2f}{ci}, accuracy {m['accuracy']:.2f}, precision "
              f"{m['precision']:.2f}, F1 {m['f1']:.2f} pooled over {coverage_text(m)} of the test split; per-image "
              f"means: mIoU {p['mIoU']:.2f}, accuracy {p['accuracy']:.2f}, precision {p['precision']:.2f}, F1 "
              f"{p['f1']:.2f} ({rep['seconds']} s)", markup=False, highlight=False)
    print(Path(cfg.out) / "report.md")


def _what_was_kept(kept: dict) -> str:
    """The one line for Ctrl-C: the stores (whole or in part) and the run checkpoint that survive, and that the
    same command continues from them (every step resumes)."""
    said = [f"the {part} store {url}" for part, url in kept.get("stores", {}).items()]
    if "extracting" in kept:
        part, stats = kept["extracting"]
        said.append(f"{stats.computed} samples computed into the {part} store {stats.store}" if stats.store
                    else f"nothing of the {part} store yet")
    if "train" in kept and not kept.get("trained"):
        from hairdiff.model.checkpoints import latest_checkpoint, read_checkpoint_state

        ckpt = latest_checkpoint(kept["train"].out)
        said.append(f"the run's checkpoint {ckpt} (iteration {read_checkpoint_state(ckpt)['iteration']} of "
                    f"{kept['train'].iters})" if ckpt is not None else
                    f"no checkpoint of the run {kept['train'].out} yet (one every {kept['train'].ckpt_every} "
                    "iterations)")
    if not said:
        return "interrupted before anything was extracted: nothing kept; run the same command again to start"
    return (f"interrupted: kept {', '.join(said)}; run the same command again to continue from there (every step "
            "resumes)")
