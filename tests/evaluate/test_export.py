"""`pipeline export`: the model card holds this head's evaluation with what it was measured on, the recipe with
each setting's source, the training data; a stale or foreign evaluation is never shown as this head's."""
from __future__ import annotations

import json
import shutil

import pytest
from huggingface_hub import ModelCard

from hairdiff.core.recipe import SMOKE
from hairdiff.evaluate.card import TINY_LINE, eval_results
from hairdiff.evaluate.config import EvalConfig
from hairdiff.evaluate.metrics import METRICS
from hairdiff.evaluate.run import evaluate_run
from hairdiff.experiments.recipes import provenance
from tests.fixtures.cli import invoke
from tests.fixtures.stores import make_eval_store, make_run, synthetic_samples


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """OUT/run (a head trained on figaro) and OUT/eval (`pipeline eval` of it on a store of 5 images), the layout
    `pipeline reproduce` and `pipeline demo` write."""
    out = tmp_path_factory.mktemp("out")
    run = make_run(out, trained_on="figaro")
    store = make_eval_store(out, "figaro", synthetic_samples(), root=str(out / "nowhere"))
    metrics = evaluate_run(EvalConfig(run=str(run), cache=store, out=str(out / "eval"), device="cpu"))
    return run, metrics


def export(run, out, *args) -> tuple[int, str, ModelCard]:
    code, stdout, err = invoke("export", run, "--out", out, *args)
    return code, err, (ModelCard.load(out / "README.md") if code == 0 else None)


def test_the_card_shows_the_evaluation_of_this_head(tmp_path, evaluated):
    run, m = evaluated
    code, err, card = export(run, tmp_path / "m")
    assert code == 0, err
    assert card.data.library_name == "hairdiff" and card.data.pipeline_tag == "image-segmentation"
    assert {"hairdiff", "hair-segmentation"} <= set(card.data.tags)
    text = card.text
    assert TINY_LINE not in text  # a backbone with weights: no warning line
    assert "Measured on figaro / test: all 5 images" in text and m["store"] in text
    keys = [mt.key for mt in METRICS]
    assert "| pooled | " + " | ".join(f"{m[k]:.2f}" for k in keys) + " |" in text
    per = m["per_image_mean"]
    assert "| per-image mean | " + " | ".join(f"{per[k]:.2f}" if k in per else "-" for k in keys) + " |" in text
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["card"]["evaluation"]["pooled"]["mIoU"] == m["mIoU"]
    assert config["head_source"]["source"] == "final" and config["meta"]["fingerprint"] == m["fingerprint"]
    assert "| figaro | train |" in text  # the training data
    assert "## Intended use" in text and "## Limits" in text


def test_the_card_metadata_carries_the_evaluation_as_a_model_index_only_where_it_means_something(tmp_path,
                                                                                                 evaluated):
    run, m = evaluated
    code, err, card = export(run, tmp_path / "m")
    assert code == 0, err
    got = {r.metric_type: r for r in card.data.eval_results}  # read back from README.md's YAML
    assert list(got) == [mt.hub for mt in METRICS]
    assert card.data.model_name and all(r.task_type == "image-segmentation" for r in got.values())
    assert {(r.dataset_type, r.dataset_split) for r in got.values()} == {("figaro", "test")}
    assert got["mean_iou"].metric_value == round(m["mIoU"], 2) and got["f1"].metric_value == round(m["f1"], 2)
    facts = json.loads((tmp_path / "m" / "config.json").read_text())["card"]
    assert len(eval_results(facts)) == len(METRICS)
    # numbers a reader of metadata alone would take for a model's: none
    assert eval_results({**facts, "random_weights": True}) is None
    assert eval_results({**facts, "evaluation": {**facts["evaluation"], "evaluated_on_training_store": True}}) is None
    assert eval_results({**facts, "evaluation": None}) is None


def test_a_reproduce_run_shows_its_recipe_with_sources_and_a_stale_evaluation_is_left_out(tmp_path, evaluated):
    run, m = evaluated
    out = tmp_path / "out"
    shutil.copytree(run.parent, out)
    rows = provenance(SMOKE)
    (out / "report.json").write_text(json.dumps({"run": str(out / "run"), "provenance": rows}))
    # trained again since it was scored (or another run of the same name and length: the same file names and
    # iterations): the evaluation beside it scored other weights, not this head's numbers
    (tmp_path / "retrained").mkdir()
    retrained = make_run(tmp_path / "retrained", seed=1)
    shutil.copyfile(retrained / "head.safetensors", out / "run" / "head.safetensors")
    code, err, card = export(out / "run", tmp_path / "m")
    assert code == 0, err
    assert "no `pipeline eval` of this head found" in err
    assert "Not evaluated" in card.text and f"{m['mIoU']:.2f}" not in card.text
    assert f"From {out / 'report.json'} (`pipeline reproduce`)." in card.text
    for r in rows:
        assert f"| {r['setting']} | {r['value']} | {r['source']} | {r['where']} |" in card.text
    # Asked for by name, another head's evaluation is refused, and nothing is written.
    code, err, _ = export(out / "run", tmp_path / "m2", "--metrics", out / "eval" / "metrics.json")
    assert code == 2 and "scores other weights (" in err and f"than the ones exported ({out / 'run'}" in err, err
    assert not (tmp_path / "m2").exists()


def test_the_out_folder_holds_no_other_model(tmp_path, evaluated):
    run, _ = evaluated
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text("{}")
    code, err, _ = export(run, other)
    assert code == 2 and err.strip() == (f"error: --out {other}: holds a config.json that does not read as a hairdiff "
                                         "model's: pass a new or empty folder (a hairdiff model folder is replaced), "
                                         "or delete that file")
    assert (other / "config.json").read_text() == "{}"
    code, err, _ = export(run, tmp_path / "m")
    code2, err2, _ = export(run, tmp_path / "m")  # a model folder of hairdiff's is replaced
    assert code == code2 == 0, err2
