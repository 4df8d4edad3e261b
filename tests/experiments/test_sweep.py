"""`pipeline sweep`: the grid refused before anything loads, every point's stores, run and scores as the next
stage gets them, outputs tied to each point's own eval, resumption after an interruption, reuse on a rerun,
the folder bound to its shared settings, and extraction on a Dask cluster. Real tiny model and real head on a
small Figaro-layout dataset (6 images: 5 train, 1 held out)."""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hairdiff.cache import FeatureStore
from hairdiff.cli.sweep import spread_values
from hairdiff.core.errors import Interrupted, OutputMismatchError, UsageError
from hairdiff.experiments.config import Point, SweepConfig
from hairdiff.experiments.sweep import sweep
from tests.fixtures.cli import invoke
from tests.fixtures.layouts import make_figaro


@pytest.fixture()
def data(tmp_path) -> Path:
    return make_figaro(tmp_path / "fig", "Training", frames=range(1, 7), size=(30, 40))


def config(data, tmp_path, **kw) -> SweepConfig:
    base = dict(dataset="figaro", root=str(data), model="tiny", out=str(tmp_path / "sw"), iters=2, views="none",
                cache_root=str(tmp_path / "cache"), device="cpu")
    return SweepConfig(**{**base, **kw})


# --------------------------------------------------------------------------------------------- the grid
@pytest.mark.parametrize("kw,words", [
    ({"timesteps": "0,1000"}, ["--timesteps", "1000", "0..999"]),
    ({"timesteps": "-1"}, ["--timesteps", "'-1'"]),
    ({"timesteps": "0,2.5"}, ["'2.5'", "whole number"]),
    ({"timesteps": "zero"}, ["'zero'"]),
    ({"timesteps": " , "}, ["--timesteps is empty"]),
    ({"timesteps": "0,25,0"}, ["--timesteps", "0", "twice"]),
    ({"prompts": []}, ["--prompts: no prompt"]),
    ({"prompts": ["a", "b", "a"]}, ["--prompts", "'a'", "twice"]),
    ({"prompts": ["", ""]}, ["--prompts", "''", "twice"]),
    ({"taps": ""}, ["--taps is empty"]),
    ({"taps": "unet,vae"}, ["'vae'", "not a tap set"]),
    ({"taps": "unet.up_blocks.0"}, ["'unet.up_blocks.0'", "pipeline extract --taps"]),
    ({"taps": "odise,odise"}, ["'odise'", "twice"]),
    ({"limit": 1}, ["--limit 1"]),
    ({"iters": 0}, ["--iters 0"]),
    ({"stop_after": 0}, ["--stop-after 0"]),
    ({"ids_train": "train.txt"}, ["--ids-train and --ids-test"]),
    ({"views": "mirror"}, ["mirror"]),
    ({"scheduler": "dask"}, ["--scheduler 'dask'"]),
    ({"dataset": "folder"}, ["--dataset 'folder'"]),
])
def test_a_bad_grid_is_refused_on_construction(tmp_path, kw, words):
    with pytest.raises(UsageError) as e:
        config(tmp_path, tmp_path, **kw)
    for w in words:
        assert w in str(e.value), (w, str(e.value))
    assert "\n" not in str(e.value)


def test_prompts_file_and_the_grid_in_order(tmp_path):
    f = tmp_path / "prompts.txt"
    f.write_text('A photo of a hair.\n\n  ""  \nhair\n')
    cfg = config(tmp_path, tmp_path, timesteps="0,50", prompts=["x"], prompts_file=str(f), taps="unet,odise")
    assert cfg.grid_prompts == ["x", "A photo of a hair.", "", "hair"]
    assert cfg.points[:3] == [Point(0, "x", "unet"), Point(50, "x", "unet"), Point(0, "x", "odise")]
    assert len(cfg.points) == 2 * 4 * 2 == len({p.name for p in cfg.points})  # names unique, folder-safe
    assert all(c.isalnum() or c in "-_" for p in cfg.points for c in p.name)
    assert config(tmp_path, tmp_path).grid_prompts == ["A photo of a hair."]  # none given: the recipe's
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(UsageError, match="blank.txt: holds no prompt"):
        config(tmp_path, tmp_path, prompts_file=str(tmp_path / "blank.txt"))
    with pytest.raises(UsageError, match="gone.txt: cannot read it"):
        config(tmp_path, tmp_path, prompts_file=str(tmp_path / "gone.txt"))


def test_prompts_take_every_value_after_one_flag():
    argv = ["sweep", "--timesteps", "0,100", "--prompts", "A photo of a hair.", "", "--taps", "unet"]
    assert spread_values(argv) == ["sweep", "--timesteps", "0,100", "--prompts", "A photo of a hair.",
                                   "--prompts", "", "--taps", "unet"]
    assert spread_values(["sweep", "--prompts", "a", "--prompts", "b"]) == ["sweep", "--prompts", "a", "--prompts", "b"]
    assert spread_values(["sweep", "--prompts", "a", "b"]) == ["sweep", "--prompts", "a", "--prompts", "b"]
    assert spread_values(["sweep", "--prompts=-x", "y"]) == ["sweep", "--prompts=-x", "y"]  # the parser's to refuse
    assert spread_values(["extract", "--prompts", "a", "b"]) == ["extract", "--prompts", "a", "b"]  # sweep's alone


# ------------------------------------------------------------------------------------ runs of the grid
def spy():
    """A progress factory recording (label, total, advanced) per phase: what each run actually computed."""
    phases = []

    @contextmanager
    def progress(label, total, done=0):
        phase = {"label": label, "total": total, "advanced": 0}
        phases.append(phase)

        def advance(n=1, info=""):
            phase["advanced"] += n

        yield advance

    return progress, phases


def interrupting(point: str, stage: str):
    """A progress factory that presses Ctrl-C at the first advance of `stage` in `point`."""
    @contextmanager
    def progress(label, total, done=0):
        def advance(n=1, info=""):
            if label.startswith(point) and stage in label:
                raise KeyboardInterrupt

        yield advance

    return progress


def files_state(folder: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_the_exact_command_line_writes_every_point_and_a_rerun_reuses_everything(data, tmp_path):
    args = ["sweep", "--dataset", "figaro", "--root", data, "--model", "tiny", "--timesteps", "0,100", "--prompts",
            "A photo of a hair.", "", "--iters", "2", "--out", tmp_path / "sw", "--cache-root", tmp_path / "cache",
            "--device", "cpu"]
    code, out, err = invoke(*args)
    assert code == 0, err
    assert out.strip().splitlines()[-1] == str(tmp_path / "sw" / "sweep.md")
    rep = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert rep["grid"] == {"timesteps": [0, 100], "prompts": ["A photo of a hair.", ""], "taps": ["unet"]}
    rows = rep["points"]
    assert [(r["timestep"], r["prompt"]) for r in rows] == [(0, "A photo of a hair."), (100, "A photo of a hair."),
                                                           (0, ""), (100, "")]
    assert len({r["stores"]["train"] for r in rows}) == len({r["stores"]["test"] for r in rows}) == 4
    for r in rows:
        assert r["status"] == "done" and r["name"] == Point(r["timestep"], r["prompt"], r["taps"]).name
        # What each stage got: the stores hold the point's features, the run trained on its train store, the
        # eval scored its test store, and the row's metrics are that eval's.
        for part, views in (("train", 2), ("test", 1)):
            store = FeatureStore.open(r["stores"][part])
            inputs = store.attrs["fingerprint_inputs"]
            assert (inputs["timestep"], inputs["prompt"]) == (r["timestep"], r["prompt"]), inputs
            assert store.layout.num_views == views and not store.missing_indices().size  # the recipe's flip
            assert r["work"]["computed"][part] == store.layout.num_samples and r["store_bytes"][part] > 0
        run = json.loads((Path(r["run"]) / "config.json").read_text())
        assert run["config"]["stores"] == [r["stores"]["train"]] and run["config"]["iters"] == 2
        saved = json.loads((Path(r["eval"]) / "metrics.json").read_text())
        assert saved["store"] == r["stores"]["test"] and saved["run"] == r["run"]
        assert r["metrics"]["mIoU"] == saved["mIoU"] and r["metrics"]["hair_iou"] == saved["hair_iou"]
        assert r["metrics"]["per_image_mean"]["mIoU"] == saved["per_image_mean"]["mIoU"]
        assert r["work"]["iterations"] == 2 and not any(r["reused"].values())
        assert all(r["seconds"][k] > 0 for k in ("extract", "train", "eval"))
    best = max(rows, key=lambda r: r["metrics"]["mIoU"])
    assert rep["best"] == best["name"]
    md = (tmp_path / "sw" / "sweep.md").read_text()
    marked = [line for line in md.splitlines() if line.startswith("| **best** |")]
    assert len(marked) == 1 and f"`{best['name']}`" in marked[0] and f"| {best['metrics']['mIoU']:.2f} [" in marked[0]
    assert "say nothing about the method" in md and '| "" (empty) |' in md
    assert "| timestep | 0,100 | sweep axis |" in md and "| prompt | 'A photo of a hair.', '' | sweep axis |" in md
    png = Image.open(tmp_path / "sw" / "sweep.png")
    assert png.size[0] > 1.8 * png.size[1]  # two panels side by side
    assert "| setting | value | source" in err  # the shared recipe printed first

    before = files_state(tmp_path / "cache") | files_state(tmp_path / "sw" / "points")
    code, _, err = invoke(*args)
    assert code == 0, err
    again = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert "4 of 4 points finished already" in err and "loading model" not in err
    for old, new in zip(rows, again["points"]):
        assert all(new["reused"].values()) and new["work"]["iterations"] == 0 and not new["work"]["computed"]
        assert new["metrics"] == old["metrics"] and new["stores"] == old["stores"]
    assert files_state(tmp_path / "cache") | files_state(tmp_path / "sw" / "points") == before  # nothing rewritten


def test_an_interrupted_sweep_continues_where_it_stopped(data, tmp_path):
    cfg = config(data, tmp_path, timesteps="0,50")
    first, second = cfg.points
    # Ctrl-C while the second point extracts its test store: the first point is finished, the second's
    # training store is complete.
    with pytest.raises(Interrupted) as e:
        sweep(cfg, progress=interrupting(second.name, "extract figaro/Training"), log=lambda m: None,
              command="`pipeline sweep ...`")
    message = str(e.value)
    assert f"extraction of point {second.name}" in message and "1 of 2 points are finished" in message
    assert "run `pipeline sweep ...` again" in message and "\n" not in message
    rep = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert [r["status"] for r in rep["points"]] == ["done", "pending"] and rep["best"] == first.name
    # ... and during the second point's scoring, after its training finished.
    with pytest.raises(Interrupted, match=f"scoring of point {second.name}"):
        sweep(cfg, progress=interrupting(second.name, "eval"), log=lambda m: None)
    progress, phases = spy()
    rep = sweep(cfg, progress=progress, log=lambda m: None)
    a, b = rep["points"]
    assert a["reused"] == {"extract": True, "train": True, "eval": True}
    assert b["reused"] == {"extract": True, "train": True, "eval": False} and b["status"] == "done"
    assert b["work"]["computed"] == {"train": 0, "test": 0} and b["work"]["iterations"] == 0
    assert [p["label"] for p in phases if p["advanced"]] == [f"{second.name}: eval"]  # only the scoring ran
    assert (Path(b["eval"]) / "metrics.json").exists()


def test_stop_after_then_the_same_command_finishes_the_rest_and_every_tap_set_trains(data, tmp_path):
    cfg = config(data, tmp_path, timesteps="0,50", taps="unet,odise", stop_after=1)
    rep = sweep(cfg, log=lambda m: None)
    assert [r["status"] for r in rep["points"]] == ["done", "pending", "pending", "pending"]
    assert "1 of 4 points finished" in (tmp_path / "sw" / "sweep.md").read_text()
    progress, phases = spy()
    rep = sweep(config(data, tmp_path, timesteps="0,50", taps="unet,odise"), progress=progress, log=lambda m: None)
    rows = rep["points"]
    assert [r["status"] for r in rows] == ["done"] * 4 and rows[0]["reused"]["train"]
    trained = [p for p in phases if p["label"].endswith(": train")]
    assert [(p["label"].split(":")[0], p["advanced"]) for p in trained] == [(r["name"], 2) for r in rows[1:]]
    # Each tap set's features reach its store; the smoke recipe's crop (96) is fitted to odise's stride 64.
    for r in rows:
        store = FeatureStore.open(r["stores"]["train"])
        assert ("vae.encoder" in json.dumps(store.attrs["fingerprint_inputs"])) == (r["taps"] == "odise")
        assert r["crop"] == (64 if r["taps"] == "odise" else 96) == max(lv.stride for lv in store.levels) * (
            1 if r["taps"] == "odise" else 3)
        assert json.loads((Path(r["run"]) / "config.json").read_text())["config"]["crop"] == r["crop"]


def test_the_folder_is_bound_to_its_shared_settings_and_the_grid_may_grow(data, tmp_path):
    sweep(config(data, tmp_path, timesteps="0"), log=lambda m: None)
    with pytest.raises(OutputMismatchError) as e:
        sweep(config(data, tmp_path, timesteps="0", iters=3), log=lambda m: None)
    assert "recipe.iters: 2 -> 3" in str(e.value) and "another --out" in str(e.value)
    # A new prompt: the old point is read back, the new one computed.
    grown = config(data, tmp_path, timesteps="0", prompts=["A photo of a hair.", ""])
    rep = sweep(grown, log=lambda m: None)
    assert [all(r["reused"].values()) for r in rep["points"]] == [True, False]
    assert rep["finished"] == 2 and rep["points"][1]["work"]["iterations"] == 2
    # A point's folder is bound to its own settings too.
    pdir = Path(rep["points"][1]["folder"])
    manifest = json.loads((pdir / "manifest.json").read_text())
    assert manifest["sweep-point"]["point"] == {"timestep": 0, "prompt": "", "taps": "unet"}
    # A finished point whose folder was made with other settings is refused, never read back as this one.
    manifest["sweep-point"]["limit"] = 99
    (pdir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(OutputMismatchError, match=f"{pdir.name}.*limit: 99 -> null.*delete"):
        sweep(grown, log=lambda m: None)


@pytest.mark.slow
def test_extraction_on_a_dask_cluster_fills_the_same_stores(data, tmp_path):
    from distributed import LocalCluster

    local = sweep(config(data, tmp_path, timesteps="0,50", out=str(tmp_path / "one"),
                         cache_root=str(tmp_path / "c1")), log=lambda m: None)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                      dashboard_address=None) as cluster:
        rep = sweep(config(data, tmp_path, timesteps="0,50", out=str(tmp_path / "dask"),
                           cache_root=str(tmp_path / "c2"), scheduler=cluster.scheduler_address), log=lambda m: None)
    for a, b in zip(local["points"], rep["points"]):
        for part in ("train", "test"):
            assert Path(a["stores"][part]).name == Path(b["stores"][part]).name  # same fingerprint and data
            sa, sb = FeatureStore.open(a["stores"][part]), FeatureStore.open(b["stores"][part])
            assert not sb.missing_indices().size and b["work"]["computed"][part] == sb.layout.num_samples
            fa, fb = sa.read_batch(list(range(sa.num_samples)))["features"], sb.read_batch(
                list(range(sb.num_samples)))["features"]
            for k in fa:
                np.testing.assert_allclose(np.asarray(fa[k], np.float32), np.asarray(fb[k], np.float32), atol=1e-3)
        assert b["status"] == "done" and b["work"]["iterations"] == 2
