"""`pipeline export`: a run's head as a portable model folder (config.json, model.safetensors, README.md)."""
from __future__ import annotations

from pathlib import Path

from hairdiff.cli.progress import err
from hairdiff.evaluate.config import ExportConfig


def export(cfg: ExportConfig) -> None:
    """Write a trained head as a portable model folder: config.json, model.safetensors and README.md.

    The folder needs no run folder: config.json holds the head's settings and provenance, model.safetensors its
    weights, README.md the model card (the run's evaluation with what it was measured on, the recipe with each
    setting's source, the training data, intended use and limits).

    The head is the one `pipeline eval` scores (RUN/best/ when the run validated, --no-best the final one). Load the
    folder with `HairSegmenter.from_pretrained(DIR)` or `pipeline serve DIR`; --push-to publishes it to the Hugging
    Face Hub. Example:

        pipeline export hairdiff-demo/run --out hair-model
    """
    from hairdiff.evaluate.hub import check_model_out
    from hairdiff.evaluate.segmenter import HairSegmenter

    check_model_out(Path(cfg.out))
    segmenter = HairSegmenter.from_run(cfg.run, device="cpu", best=cfg.best, backbone=False, metrics=cfg.metrics,
                                       say=lambda message: err.print(f"exporting {message}"))
    evaluation = segmenter.card["evaluation"]
    if evaluation is None:
        err.print(f"warning: no `pipeline eval` of this head found beside {cfg.run}: the card says it is not "
                  "evaluated (pass --metrics EVAL/metrics.json)")
    else:
        err.print(f"model card: the evaluation on {evaluation['dataset']}/{evaluation['split']} "
                  f"({evaluation['coverage']}) from {evaluation['file']}")
    if segmenter.card["random_weights"]:
        err.print("model card: the backbone is the random-weight tiny model, and the card's first line says its "
                  "numbers mean nothing")
    segmenter.save_pretrained(cfg.out)
    if cfg.push_to:
        err.print(f"pushed to the Hugging Face Hub: {segmenter.push_to_hub(cfg.push_to)}")
    print(Path(cfg.out))
