"""A portable model folder: a trained head that needs no run folder and no hairdiff command to be used.

The Hugging Face layout, written and read through huggingface_hub's ModelHubMixin (evaluate/segmenter.py):

    config.json          this module's record: FORMAT, the head's provenance (`meta`, as a run records it: the
                         features' fingerprint and its inputs (backbone, prompt, timestep, taps, resolution), the
                         levels, the head config, the stores it trained on), which head of which run it was
                         (`head_source`) and the model card's facts (`card`: evaluation, recipe, training data)
    model.safetensors    the head's weights
    README.md            the model card, rendered from `card` (evaluate/card.py)

This module owns the record and its checks: a folder that is not a model, a config.json that is not ours or is
damaged, and weights that are missing, damaged or do not fit the head described are one ModelFolderError naming
the file and the fix, raised before any backbone is loaded.
"""
from __future__ import annotations

from pathlib import Path

from hairdiff.core.errors import ModelFolderError
from hairdiff.core.versions import hairdiff_version
from hairdiff.model.records import check_weights, read_run_record
from hairdiff.model.trained import META_KEYS, head_record

FORMAT = "hairdiff-model-v1"
CONFIG, WEIGHTS, CARD = "config.json", "model.safetensors", "README.md"
FIX = "write the folder again (`pipeline export RUN --out DIR`, or `save_pretrained`), or download it again"
NOT_A_MODEL = ("pass a folder written by `pipeline export` or `save_pretrained`, a Hugging Face Hub id of one, or the "
               "--out folder of a `pipeline train` run")


def is_run_folder(path: Path) -> bool:
    """A `pipeline train` --out folder: a finished run's run.json, or an unfinished run's checkpoints/ or best/."""
    path = Path(path)
    return path.is_dir() and any(p.exists() for p in (path / "run.json", path / "checkpoints", path / "best"))


def trained_head(source: dict) -> dict:
    """Which head of which run `source` stands for (model.trained.head_source's answer, or a model folder's own
    `model_source`, which keeps the run's head it came from)."""
    return source["trained_as"] if "trained_as" in source else head_record(source)


def model_record(source: dict, card: dict) -> dict:
    """What config.json holds for the head `source` names."""
    return {"format": FORMAT, "hairdiff_version": hairdiff_version(),
            "meta": {k: source["meta"][k] for k in META_KEYS}, "head_source": trained_head(source), "card": card}


def read_model_record(folder: Path) -> dict:
    """config.json of a model folder, checked: ModelFolderError when the folder has none, when it is not JSON, not
    a hairdiff model's (another library's config.json), or lacks what loading the head needs."""
    folder = Path(folder)
    path = folder / CONFIG
    if not path.is_file():
        raise ModelFolderError(f"{folder} is not a hairdiff model folder (no {CONFIG}) nor a run folder (no run.json, "
                               f"checkpoints/ or best/): {NOT_A_MODEL}")
    record = read_run_record(path, FIX, error=ModelFolderError)
    if record.get("format") != FORMAT:
        found = f"format {record['format']!r}" if "format" in record else "no \"format\": not written by hairdiff"
        raise ModelFolderError(f"{path} is not a hairdiff model's config ({found}, expected {FORMAT!r}): "
                               f"{NOT_A_MODEL}")
    meta = record.get("meta")
    missing = [k for k in META_KEYS if not isinstance(meta, dict) or k not in meta]
    if missing or not isinstance(record.get("head_source"), dict) or not isinstance(record.get("card"), dict):
        what = ", ".join(f"meta.{k}" for k in missing) or "head_source or card"
        raise ModelFolderError(f"{path} is damaged (it lacks {what}): {FIX}")
    return record


def model_source(folder: Path, record: dict) -> dict:
    """The head a model folder holds, as model.trained.load_head reads it (its weights checked to be a complete
    safetensors file; a misfit with config.json is named by load_head with the same error and fix)."""
    folder = Path(folder)
    check_weights(folder / WEIGHTS, FIX, error=ModelFolderError)
    head = record["head_source"]
    return {**head, "source": "model", "weights": str(folder / WEIGHTS), "record": str(folder / CONFIG),
            "meta": record["meta"], "trained_as": head, "error": ModelFolderError, "fix": FIX}
