"""`pipeline eval` writes a 95% interval for every metric, and `pipeline compare` pairs two evaluations of the
same images (refusing, in one line, evaluations of other images or other annotation resolutions)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hairdiff.core.errors import EvaluationError
from hairdiff.evaluate.compare import find_evaluation, load_evaluation
from hairdiff.evaluate.config import EvalConfig
from hairdiff.evaluate.metrics import PER_IMAGE_KEYS, TABLE_KEYS
from hairdiff.evaluate.run import evaluate_run
from tests.fixtures.cli import invoke
from tests.fixtures.stores import ellipse, make_run, synthetic_samples
from tests.fixtures.stores import make_eval_store as make_store


@pytest.fixture(scope="module")
def evals(tmp_path_factory):
    """Two heads (two seeds) scored on one store, a third store of other images, one of the same images with
    annotations at another resolution: the evaluations `pipeline compare` is given."""
    tmp = tmp_path_factory.mktemp("cmp")
    samples = synthetic_samples()
    same = make_store(tmp, "celebamask", samples, root=str(tmp / "nowhere"))
    rng = np.random.default_rng(5)
    others = make_store(tmp, "figaro", [(f"x{i}", (40, 40), ellipse(40, 40, rng)) for i in range(5)],
                        root=str(tmp / "elsewhere"))
    finer = make_store(tmp, "celebamask", [(i, size, np.kron(lab, np.ones((2, 2), np.uint8)))
                                           for i, size, lab in samples], root=str(tmp / "nowhere"), split="val")
    out = {}
    for name, seed, store in (("a", 0, same), ("b", 1, same), ("others", 1, others), ("finer", 1, finer)):
        run_dir = tmp / f"run-{name}"
        run_dir.mkdir()
        run = make_run(run_dir, seed=seed)
        out[name] = run / "eval"  # inside its run folder, as README's example puts it
        evaluate_run(EvalConfig(run=run, cache=store, out=out[name], overlays=0, device="cpu"))
    return out


def test_eval_writes_an_interval_for_every_metric_with_the_number_of_images(evals):
    m = json.loads((evals["a"] / "metrics.json").read_text())
    iv = m["intervals"]
    assert iv["images"] == m["images"] == 5 and iv["level"] == 0.95 and iv["resamples"] == 10_000
    assert set(TABLE_KEYS) <= set(iv["pooled"]) and set(iv["per_image_mean"]) == set(PER_IMAGE_KEYS)
    for reading, values in (("pooled", m), ("per_image_mean", m["per_image_mean"])):
        for key in (TABLE_KEYS if reading == "pooled" else PER_IMAGE_KEYS):
            lo, hi = iv[reading][key]
            assert lo <= values[key] <= hi, (reading, key)
    rows = json.loads((evals["a"] / "per_image.json").read_text())
    assert all(np.array(r["confusion"]).sum() > 0 and len(r["boundary_counts"]) == 4 for r in rows)
    md = (evals["a"] / "metrics.md").read_text()
    lo, hi = iv["pooled"]["mIoU"]
    assert f"{m['mIoU']:.2f} [{lo:.2f}, {hi:.2f}]" in md and "over the 5 test images" in md


def test_compare_prints_each_difference_with_its_paired_interval(evals, tmp_path):
    run_a = evals["a"].parent  # a run folder holding exactly one evaluation: unambiguous
    code, out, err = invoke("compare", run_a, evals["b"] / "metrics.json", "--out", tmp_path / "c",
                            "--resamples", "2000")
    assert code == 0, err
    assert out.strip().splitlines()[-1] == str(tmp_path / "c" / "compare.json")
    report = json.loads((tmp_path / "c" / "compare.json").read_text())
    a, b = (json.loads((evals[k] / "metrics.json").read_text()) for k in ("a", "b"))
    (c,) = report["comparisons"]
    assert c["images"] == 5 and report["reference"] == str(evals["a"])
    for key in TABLE_KEYS:
        d = c["pooled"][key]
        assert d["difference"] == pytest.approx(b[key] - a[key], abs=1e-9), key
        assert d["interval"][0] <= d["difference"] <= d["interval"][1]
        assert d["distinguishable"] == (d["interval"][0] > 0 or d["interval"][1] < 0)
    for key in PER_IMAGE_KEYS:
        assert c["per_image_mean"][key]["difference"] == pytest.approx(
            b["per_image_mean"][key] - a["per_image_mean"][key], abs=1e-9)
    d = c["pooled"]["mIoU"]
    assert f"{d['difference']:+.2f} [{d['interval'][0]:+.2f}, {d['interval'][1]:+.2f}]" in err  # the table
    assert "X - A" in (tmp_path / "c" / "compare.md").read_text()


@pytest.mark.parametrize("other, says", [("others", "scored different images"),
                                         ("finer", "different annotation resolutions")])
def test_compare_refuses_evaluations_of_other_images_in_one_line(evals, tmp_path, other, says):
    code, out, err = invoke("compare", evals["a"], evals[other], "--out", tmp_path / "c")
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert not (tmp_path / "c" / "compare.json").exists()


def test_what_counts_as_an_evaluation(evals, tmp_path):
    assert find_evaluation(evals["a"].parent) == evals["a"]
    sweep = tmp_path / "sweep"
    for name in ("p1", "p2"):
        (sweep / "points" / name / "eval").mkdir(parents=True)
        (sweep / "points" / name / "eval" / "metrics.json").write_text("{}")
    with pytest.raises(EvaluationError, match="holds 2 evaluations"):
        find_evaluation(sweep)
    assert find_evaluation(sweep / "points" / "p1") == sweep / "points" / "p1" / "eval"
    with pytest.raises(EvaluationError, match="holds no evaluation"):
        find_evaluation(tmp_path)
    old = tmp_path / "old"  # per_image.json written before the per-image matrices were kept
    old.mkdir()
    (old / "metrics.json").write_text((evals["a"] / "metrics.json").read_text())
    rows = json.loads((evals["a"] / "per_image.json").read_text())
    (old / "per_image.json").write_text(json.dumps([{k: v for k, v in r.items() if k != "confusion"} for r in rows]))
    with pytest.raises(EvaluationError, match="no per-image confusion matrices"):
        load_evaluation(old)
