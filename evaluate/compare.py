"""`pipeline compare EVAL_A EVAL_B [...]`: is one head better than another on the same test images?

Each evaluation after the first is compared with the first (A): for every metric, pooled and per-image mean,
the difference X - A and its 95% interval from a PAIRED bootstrap (evaluate/bootstrap.py: each resample draws
the same images for both, so what the two heads share, the hard and the easy images, cancels out). A
difference whose interval excludes 0 is established on these images; one whose interval holds 0 is not.

Pairing needs the same images: the evaluations must hold the same image ids, each at the same annotation
size and with the same truth (pixels of each class), and come from stores of the same data where both record
it (the data key). Anything else is refused in one line (EvaluationMismatchError). An evaluation is a
`pipeline eval` --out folder (metrics.json + per_image.json, with the per-image confusion matrices eval keeps
since issue 25), its metrics.json, or a folder holding exactly one such folder: a run folder with its eval
inside, `pipeline reproduce`'s --out (eval/), a sweep point (OUT/points/NAME, its eval/) or a sweep with one
point.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hairdiff.core.errors import EvaluationError, EvaluationMismatchError, UsageError
from hairdiff.evaluate.bootstrap import LEVEL, METHOD, ImageScores, paired_intervals
from hairdiff.evaluate.metrics import PER_IMAGE_KEYS, TABLE_KEYS
from hairdiff.evaluate.report import RANDOM_WEIGHTS, fmt

EVAL_FILES = ("metrics.json", "per_image.json")
WHAT = ("pass a `pipeline eval` --out folder (metrics.json, per_image.json), its metrics.json, or a folder holding "
        "exactly one (a run folder with its eval inside, a reproduce --out, a sweep point)")


@dataclass
class Evaluation:
    folder: Path
    metrics: dict
    rows: list[dict]  # per_image.json, in the order of the first evaluation once paired

    @property
    def random_weights(self) -> bool:
        return bool(self.metrics.get("random_weight_backbone"))


# ------------------------------------------------------------------------------------------ finding
def _holds_one(folder: Path) -> bool:
    return (folder / "metrics.json").is_file()


def find_evaluation(path) -> Path:
    """The evaluation folder `path` names (module docstring); EvaluationError when there is none or several."""
    p = Path(path)
    if p.is_file():
        if p.name == "metrics.json":
            return p.parent
        raise EvaluationError(f"{p}: not an evaluation: {WHAT}")
    if not p.is_dir():
        raise EvaluationError(f"{p}: no such file or folder: {WHAT}")
    if _holds_one(p):
        return p
    found = sorted({d for d in p.iterdir() if d.is_dir() and _holds_one(d)}
                   | {d / "eval" for d in (p / "points").glob("*") if _holds_one(d / "eval")})
    if len(found) == 1:
        return found[0]
    if not found:
        raise EvaluationError(f"{p} holds no evaluation: {WHAT}")
    names = ", ".join(str(f) for f in found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
    raise EvaluationError(f"{p} holds {len(found)} evaluations ({names}): pass the one to compare")


def _read_json(path: Path, fix: str):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise EvaluationError(f"{path} is missing: {fix}") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise EvaluationError(f"{path} is unreadable ({type(e).__name__}): {fix}") from None


def load_evaluation(path) -> Evaluation:
    folder = find_evaluation(path)
    fix = f"score the head again with `pipeline eval --out {folder}`"
    metrics, rows = (_read_json(folder / name, fix) for name in EVAL_FILES)
    if not isinstance(metrics, dict) or not isinstance(rows, list) or not rows:
        raise EvaluationError(f"{folder}: metrics.json or per_image.json does not hold an evaluation: {fix}")
    if not all(isinstance(r, dict) and "confusion" in r and "id" in r for r in rows):
        raise EvaluationError(f"{folder / 'per_image.json'} has no per-image confusion matrices (written before "
                              f"`pipeline compare` existed): {fix}")
    return Evaluation(folder, metrics, rows)


# ------------------------------------------------------------------------------------------ pairing
def _size(row: dict) -> str:
    h, w = row.get("label_size") or ("?", "?")
    return f"{h}x{w}"


def paired(a: Evaluation, b: Evaluation) -> Evaluation:
    """b's rows in a's image order; EvaluationMismatchError unless both scored the same images at the same
    annotation resolution with the same truth."""
    where = f"{a.folder} and {b.folder}"
    ka, kb = a.metrics.get("data_key"), b.metrics.get("data_key")
    if ka and kb and ka != kb:
        raise EvaluationMismatchError(f"{where} scored stores of different images (data keys {ka[:12]} and "
                                      f"{kb[:12]}): compare evaluations of one test store's images")
    by_id = {r["id"]: r for r in b.rows}
    ids_a = [r["id"] for r in a.rows]
    if len(by_id) != len(b.rows) or set(ids_a) != set(by_id) or len(set(ids_a)) != len(ids_a):
        only_a, only_b = sorted(set(ids_a) - set(by_id)), sorted(set(by_id) - set(ids_a))
        example = f"{only_a[0]!r} only in the first" if only_a else f"{only_b[0]!r} only in the second" \
            if only_b else "an image listed twice"
        raise EvaluationMismatchError(f"{where} scored different images ({len(ids_a)} and {len(b.rows)}, "
                                      f"{len(set(ids_a) & set(by_id))} in common; {example}): compare evaluations "
                                      "of the same test images")
    rows = [by_id[i] for i in ids_a]
    for ra, rb in zip(a.rows, rows):
        if ra.get("label_size") != rb.get("label_size"):
            raise EvaluationMismatchError(f"{where} scored image {ra['id']!r} at annotation sizes {_size(ra)} and "
                                          f"{_size(rb)}: evaluations at different annotation resolutions cannot "
                                          "be paired")
        truth_a, truth_b = np.sum(ra["confusion"], 1).tolist(), np.sum(rb["confusion"], 1).tolist()
        if truth_a != truth_b:
            raise EvaluationMismatchError(f"{where} hold different annotations of image {ra['id']!r} (pixels per "
                                          f"class {truth_a} and {truth_b}): compare evaluations of the same test "
                                          "images")
    return Evaluation(b.folder, b.metrics, rows)


def image_scores(e: Evaluation) -> ImageScores:
    bounds = [r.get("boundary_counts") for r in e.rows]
    return ImageScores([r["confusion"] for r in e.rows], None if any(b is None for b in bounds) else bounds)


# ------------------------------------------------------------------------------------------ comparing
def compare(paths: list, *, resamples: int, seed: int) -> dict:
    """compare.json's content: each evaluation after the first against the first, every metric's difference
    with its paired 95% interval and whether that interval excludes 0."""
    evals = [load_evaluation(p) for p in paths]
    folders = [e.folder.resolve() for e in evals]
    twice = next((f for i, f in enumerate(folders) if f in folders[:i]), None)
    if twice is not None:
        raise UsageError(f"pipeline compare: {twice} is given twice; pass each evaluation once")
    first, comparisons = evals[0], []
    for other in evals[1:]:
        b = paired(first, other)
        diff = paired_intervals(image_scores(b), image_scores(first), resamples=resamples, seed=seed)
        comparisons.append({"evaluation": str(b.folder), "images": diff["images"],
                            **{reading: _rows(diff[reading], first.metrics, b.metrics, reading)
                               for reading in ("pooled", "per_image_mean")}})
    return {"reference": str(first.folder), "evaluations": [str(e.folder) for e in evals],
            "level": LEVEL, "method": f"paired {METHOD}", "resamples": resamples, "seed": seed,
            "random_weights": any(e.random_weights for e in evals), "comparisons": comparisons}


def _value(metrics: dict, reading: str, key: str):
    return (metrics if reading == "pooled" else metrics.get("per_image_mean") or {}).get(key)


def _rows(diffs: dict, a: dict, b: dict, reading: str) -> dict:
    out = {}
    for key, d in diffs.items():
        iv = d["interval"]
        out[key] = {"reference": _value(a, reading, key), "value": _value(b, reading, key),
                    "difference": d["difference"], "interval": iv,
                    "distinguishable": None if iv is None else bool(iv[0] > 0 or iv[1] < 0)}
    return out


# ------------------------------------------------------------------------------------------ writing
def shown(reading: str) -> tuple[str, ...]:
    """The metrics the table shows (compare.json holds every pooled one)."""
    return TABLE_KEYS if reading == "pooled" else PER_IMAGE_KEYS


def cell(d: dict) -> str:
    """'+1.23 [0.40, 2.05]', with 'established' or 'not established' after it."""
    iv = d["interval"]
    text = f"{d['difference']:+.2f}" + (f" [{iv[0]:+.2f}, {iv[1]:+.2f}]" if iv else " [n/a]")
    return text + ("" if d["distinguishable"] is None else
                   " established" if d["distinguishable"] else " not established")


def markdown(report: dict) -> str:
    lines = ["# Comparison of evaluations on the same test images", "",
             f"Reference (A): `{report['reference']}`. Each row: the metric of A and of the other evaluation (X), "
             f"and X - A with its {report['level']:.0%} interval from a paired bootstrap over the test images "
             f"({report['resamples']:,} resamples, seed {report['seed']}: each resample draws the same images for "
             "both). **Established**: the interval excludes 0; **not established**: these images cannot tell the "
             "two apart. The intervals cover which test images were drawn, not how the heads were trained: two "
             "runs of one recipe with other seeds differ too, so a method's difference needs several seeds.", ""]
    if report["random_weights"]:
        lines += [f"**{RANDOM_WEIGHTS[0].upper()}{RANDOM_WEIGHTS[1:]}.**", ""]
    for c in report["comparisons"]:
        lines += [f"## X = `{c['evaluation']}` ({c['images']} images)", "",
                  "| reading | metric | A | X | X - A [95% interval] |", "|---|---|---|---|---|"]
        for reading, label in (("pooled", "pooled"), ("per_image_mean", "per-image mean")):
            for key in shown(reading):
                d = c[reading].get(key)
                if d is not None:
                    lines.append(f"| {label} | {key} | {fmt(d['reference'])} | {fmt(d['value'])} | {cell(d)} |")
        lines.append("")
    return "\n".join(lines)
