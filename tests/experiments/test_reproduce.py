"""`pipeline reproduce` as a user runs it on the shared Figaro data: the recipe with a source for every setting,
the configs it builds, both metric readings tied to the held-out annotations, the report, and a rerun."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hairdiff.core.recipe import FULL, M2F, ODISE, OPTION, OURS, PAPER, SMOKE, SMOKE_RUN, Recipe
from hairdiff.evaluate.metrics import miou_floor
from hairdiff.experiments.chain import extract_config, train_config
from hairdiff.experiments.config import ReproduceConfig
from hairdiff.model.mask2former.head import build_head_config
from hairdiff.train.schedule import POLY_POWER
from tests.fixtures import REPO
from tests.fixtures.cli import run_pipeline

FIELDS = [f.name for f in dataclasses.fields(Recipe)]
PLAN = {"train": ("Training", None), "test": ("Testing", None), "standin": False, "note": "-"}


def tcfg_head(cfg: ReproduceConfig, tmp_path):
    """The head the TrainConfig reproduce builds trains, on a CPU and on a GPU alike (`small` is explicit)."""
    tcfg = train_config(cfg, "store.zarr", tmp_path / "run")
    cpu, gpu = tcfg.head_config("cpu"), tcfg.head_config("cuda")
    assert cpu == gpu
    return cpu


@pytest.mark.parametrize("model,iters", [("CompVis/stable-diffusion-v1-3", None), ("tiny", None), ("tiny", 7),
                                         ("/models/sd13", None)])
def test_every_setting_has_a_source_and_reaches_the_configs_reproduce_builds(tmp_path, model, iters):
    cfg = ReproduceConfig(dataset="figaro", root=str(tmp_path), model=model, iters=iters, device="cpu")
    r = cfg.recipe
    rows = cfg.provenance()
    assert [row["setting"] for row in rows[:len(FIELDS)]] == FIELDS
    for row in rows:
        assert row["source"] in (PAPER, M2F, ODISE, OURS, SMOKE_RUN, OPTION) and len(row["where"]) > 10, row
    by = {row["setting"]: row for row in rows}
    # Only what the paper states is attributed to it.
    assert {k for k, row in by.items() if row["source"] == PAPER} <= {"model", "prompt", "timestep", "metrics"}
    assert by["prompt"]["source"] == by["timestep"]["source"] == PAPER
    if model == "tiny":
        assert by["model"]["source"] == OPTION and by["views"]["source"] == SMOKE_RUN
        assert by["iters"]["source"] == (OPTION if iters else SMOKE_RUN)
    else:
        assert by["model"]["source"] == (PAPER if model == FULL.model else OPTION)
        assert all(by[k]["source"] not in (SMOKE_RUN, OPTION) for k in FIELDS if k != "model")
    # The fixed settings are read from the code that fixes them.
    h = build_head_config(small=r.small)  # what train_config's TrainConfig builds on any device
    assert tcfg_head(cfg, tmp_path) == h
    assert f"{h.num_queries} queries, hidden {h.hidden_dim}, {h.dec_layers} decoder" in by["head"]["value"]
    assert f"{h.num_points} points" in by["loss"]["value"]
    assert by["head"]["source"] == (SMOKE_RUN if model == "tiny" else M2F)
    assert f"power {POLY_POWER:g}" in by["schedule"]["value"]
    # Every recipe field reaches the ExtractConfig or TrainConfig reproduce builds, with the recipe's value.
    train_ext, test_ext = extract_config(cfg, PLAN, "train"), extract_config(cfg, PLAN, "test")
    tcfg = train_config(cfg, "store.zarr", tmp_path / "run")
    for f in dataclasses.fields(Recipe):
        stage = f.metadata["stage"]
        configs = {"extract": [train_ext], "train": [tcfg], "both": [train_ext, tcfg]}[stage]
        assert all(getattr(c, f.name) == getattr(r, f.name) for c in configs), (f.name, stage)
    assert test_ext.views is None and train_ext.split == "Training" and test_ext.split == "Testing"
    assert all(getattr(test_ext, k) == getattr(train_ext, k) for k in ("model", "resolution", "timestep", "prompt",
                                                                       "taps", "seed"))
    assert (r == SMOKE) == (model == "tiny" and iters is None)


def test_the_phrase_the_papers_recipe_is_gone():
    # The paper gives no training recipe: nothing may claim one (docs, docstrings, help texts).
    rooms = ("cli", "evaluate", "extract", "train", "cache", "model", "experiments", "core", "demo")
    files = [REPO / "README.md", REPO / "DESIGN.md"] + [p for d in rooms for p in (REPO / d).rglob("*.py")]
    said = [str(p) for p in files if re.search(r"paper'?s recipe|recipe of the paper", p.read_text(), re.I)]
    assert not said, said


def held_out_pixels(root: Path, ids: list[str]) -> int:
    """Independent reference: the pixels of the held-out images' own annotations (Figaro labels have no ignore)."""
    return sum(int(np.prod(Image.open(root / "GT" / "Training" / f"{i}-gt.pbm").size)) for i in ids)


def test_reproduce_figaro_smoke_writes_the_report_and_resumes(figaro_root, tmp_path):
    args = ["reproduce", "--dataset", "figaro", "--root", figaro_root, "--model", "tiny", "--limit", "16",
            "--iters", "4", "--out", tmp_path / "r"]
    p = run_pipeline(*args, cache_root=tmp_path / "cache", timeout=600)
    assert p.stdout.strip().splitlines()[-1] == str(tmp_path / "r" / "report.md")
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    # The recipe is printed first, a source on every row.
    printed = [line for line in p.stderr.splitlines() if line.startswith("|")]
    assert len(printed) == 2 + len(report["provenance"])
    assert "| views | flip | smoke run |" in p.stderr and "| prompt | A photo of a hair. | paper |" in p.stderr
    assert "| iters | 4 | your option | --iters (full recipe: 20000) |" in p.stderr
    assert p.stderr.index("| setting | value | source") < p.stderr.index("train store:")
    assert report["random_weights"] and report["train"]["iterations"] == 4

    # Both readings, tied to the held-out annotations: the last 20% of the 16 ids, scored at their own pixels.
    test_ids = (tmp_path / "r" / "splits" / "test.txt").read_text().split()
    first = sorted(p.name.split("-")[0] for p in (Path(figaro_root) / "Original" / "Training").glob("*-org.jpg"))[:16]
    assert test_ids == first[13:] and report["metrics"]["images"] == 3
    saved = json.loads((tmp_path / "r" / "eval" / "metrics.json").read_text())
    conf = np.array(saved["confusion_matrix"], dtype=float)
    assert conf.sum() == held_out_pixels(Path(figaro_root), test_ids)
    tp = np.diag(conf)
    iou = tp / (conf.sum(0) + conf.sum(1) - tp)
    f1 = 2 * tp / (conf.sum(0) + conf.sum(1))
    m = report["metrics"]
    assert m["mIoU"] == pytest.approx(100 * iou.mean(), abs=1e-9)
    assert m["f1"] == pytest.approx(100 * f1.mean(), abs=1e-9)
    per_image = json.loads((tmp_path / "r" / "eval" / "per_image.json").read_text())
    assert [row["id"] for row in per_image] == test_ids
    for k in ("mIoU", "f1", "accuracy", "precision"):
        assert m["per_image_mean"][k] == pytest.approx(np.nanmean([row[k] for row in per_image]), abs=1e-9), k
    for reading in (m, m["per_image_mean"]):  # within one reading mean IoU >= F1 / (2 - F1)
        assert reading["mIoU"] >= miou_floor(reading["f1"]) - 1e-9

    md = (tmp_path / "r" / "report.md").read_text()
    iv = m["intervals"]  # each value with its 95% interval over the test images
    assert f"| pooled | {m['mIoU']:.2f} [{iv['pooled']['mIoU'][0]:.2f}, " in md
    assert f"| per-image mean | {m['per_image_mean']['mIoU']:.2f} [" in md
    assert "| 95.40 |" in md and "F1 98.28 implies mIoU >= 96.62: not one reading" in md
    assert "say nothing about the method" in md
    assert "held out as the test split" in md  # the shared copy has no Testing split: said, not hidden
    assert sum(line.startswith(f"| {row['setting']} | ") for row in report["provenance"] for line in md.splitlines()) \
        == len(report["provenance"])
    assert list((tmp_path / "r" / "eval" / "overlays").glob("best_*.png"))
    again = run_pipeline(*args, cache_root=tmp_path / "cache", timeout=600)
    assert "computed 0" in again.stderr and "nothing to do" in again.stderr  # every step resumed
    assert json.loads((tmp_path / "r" / "report.json").read_text())["metrics"] == report["metrics"]
