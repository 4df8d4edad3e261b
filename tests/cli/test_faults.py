"""The CLI fault table, through the real entry point.

- CASES: a mistake in an option is one line on stderr starting with "error:" that names the value at
  fault, exit status 2, and nothing left behind (no store, no run folder, no report, no output folder).
- DAMAGED: a bad input found on disk (a damaged store or run, a dataset that breaks our naming, a path that
  is not what it must be) is one "error:" line naming the file and the fix, exit 2 for a mistake and 1 for
  a run stopped on bad input, and every file already there is kept byte for byte.
- test_<N>_*: cases of issue 18 that used to exit 0 with a wrong result, each now giving the right one.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.fixtures.cli import invoke
from tests.fixtures.layouts import make_celebamask, make_figaro, make_folder
from tests.fixtures.stores import TINY, make_run, make_train_store

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA device")
ONE_GPU_AT_MOST = pytest.mark.skipif(torch.cuda.device_count() > 1, reason="cuda:1 exists on this machine")


def extract(*bad):
    return ["extract", "--dataset", "figaro", "--root", "{tmp}/data", "--model", "tiny", "--cache-root",
            "{tmp}/cache", *bad]


def train(*bad):
    return ["train", "--cache", "{tmp}/data/store.zarr", "--out", "{tmp}/run", "--device", "cpu", *bad]


def evaluate(*bad, run="{tmp}/data/run"):
    return ["eval", "--run", run, "--cache", "{tmp}/data/store.zarr", "--out", "{tmp}/eval", *bad]


def predict(*images):
    return ["predict", *images, "--run", "{tmp}/data/run", "--out", "{tmp}/pred", "--device", "cpu"]


def sweep(*bad):
    return ["sweep", "--dataset", "figaro", "--root", "{tmp}/data", "--model", "tiny", "--out", "{tmp}/sw",
            "--cache-root", "{tmp}/cache", *bad]


def case(name, args, words, marks=()):
    """args: the command line, {tmp} standing for the test's folder; words: what the error line must name."""
    return pytest.param(args, words, id=name, marks=marks)


CASES = [
    case("train-batch-size-0", train("--batch-size", "0"), ["--batch-size 0"]),
    case("train-iters-0", train("--iters", "0"), ["--iters 0"]),
    case("train-head-typo", train("--head", "num_querys=5"), ["num_querys", "num_queries"]),
    case("train-device-cuda", train("--device", "cuda"), ["--device cuda", "cpu"], NO_GPU),
    case("eval-device-cuda1", evaluate("--device", "cuda:1"), ["--device cuda:1"], ONE_GPU_AT_MOST),
    case("eval-missing-run", evaluate("--device", "cpu", run="{tmp}/no-such-run"), ["--run", "no-such-run"]),
    case("predict-missing-image", predict("{tmp}/data/photo.png", "{tmp}/data/gone.jpg"), ["gone.jpg", "no such"]),
    case("predict-empty-folder", predict("{tmp}/data/empty"), ["empty", "no image file"]),
    case("predict-not-an-image", predict("{tmp}/data/notes.txt"), ["notes.txt", "not an image file name"]),
    case("verify-not-a-store", ["cache", "verify", "{tmp}/data"], ["data", "no feature store"]),
    case("extract-resolution-500", extract("--resolution", "500"), ["--resolution 500", "multiple of 64"]),
    case("extract-resolution-32", extract("--resolution", "32"), ["--resolution 32"]),
    case("extract-resolution-0", extract("--resolution", "0"), ["--resolution 0"]),
    case("extract-timestep-5000", extract("--timestep", "5000"), ["--timestep 5000"]),
    case("extract-timestep-minus-1", extract("--timestep", "-1"), ["--timestep -1"]),
    case("extract-batch-size-0", extract("--batch-size", "0"), ["--batch-size 0"]),
    case("extract-limit-0", extract("--limit", "0"), ["--limit 0"]),
    case("extract-limit-minus-3", extract("--limit", "-3"), ["--limit -3"]),
    case("extract-taps-unknown", extract("--taps", "foo.bar"), ["foo.bar"]),
    case("sweep-timestep-1000", sweep("--timesteps", "0,1000"), ["--timesteps '0,1000'", "1000", "0..999"]),
    case("sweep-timestep-not-int", sweep("--timesteps", "0,2.5"), ["--timesteps '0,2.5'", "'2.5'"]),
    case("sweep-timestep-twice", sweep("--timesteps", "50,50"), ["--timesteps '50,50'", "twice"]),
    case("sweep-prompt-twice", sweep("--prompts", "A photo of a hair.", "", "A photo of a hair."),
         ["--prompts", "'A photo of a hair.'", "twice"]),
    case("sweep-prompts-file-folder", sweep("--prompts-file", "{tmp}/data/empty"), ["--prompts-file", "empty"]),
    case("sweep-taps-unknown", sweep("--taps", "unet,sdxl"), ["--taps 'unet,sdxl'", "'sdxl'"]),
    case("sweep-taps-empty", sweep("--taps", ","), ["--taps is empty"]),
    case("sweep-limit-1", sweep("--limit", "1"), ["--limit 1"]),
    case("sweep-out-a-file", sweep("--out", "{tmp}/data/notes.txt"), ["--out", "notes.txt", "not a folder"]),
    case("extract-precision-int4", extract("--precision", "int4"), ["--precision", "int4", "see `pipeline extract --help`"]),
]


def _files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


@pytest.fixture()
def inputs(tmp_path, monkeypatch):
    """Real, valid inputs beside the one mistake: an image, a folder without images, a text file."""
    from PIL import Image

    data = tmp_path / "data"
    (data / "empty").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(data / "photo.png")
    (data / "notes.txt").write_text("not an image")
    # Anything a command would write to the default cache (models, reports) lands here, where it is seen.
    monkeypatch.setenv("HAIRDIFF_CACHE", str(tmp_path / "home-cache"))
    return tmp_path


@pytest.mark.parametrize("args,words", CASES)
def test_a_user_mistake_is_one_line_exit_2_and_leaves_nothing(args, words, inputs):
    before = _files(inputs)
    code, _, err = invoke(*[a.format(tmp=inputs) for a in args])
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert code == 2, (code, err)
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert _files(inputs) == before, sorted(map(str, _files(inputs) - before))


# =========================================================================================================
# Bad inputs found on disk (issue 18): damaged stores and runs, datasets that break our naming, paths that
# are not what they must be. Each case builds real inputs, runs the real command once and asserts one
# `error:` line naming the file and the fix, the exit status (2 a mistake, 1 a run stopped on bad input),
# and that every file that was there before is still there, byte for byte.
# =========================================================================================================
HEAD = [f"--head={k}={v}" for k, v in TINY.items()]


class Setup:
    """What a case's setup gets: the test's folder, and a place to register cleanups (unmounting)."""

    def __init__(self, tmp: Path, finalizers: list):
        self.tmp, self._finalizers = tmp, finalizers

    def defer(self, fn) -> None:
        self._finalizers.append(fn)

    def tiny_extract(self, dataset: str, root, *extra, cache_root=None) -> list:
        return ["extract", "--dataset", dataset, "--root", root, "--model", "tiny", "--resolution", "64",
                "--workers", "0", "--cache-root", cache_root or self.tmp / "cache", *extra]

    def train(self, store, run, *extra) -> list:
        return ["train", "--cache", store, "--out", run, "--batch-size", "2", "--device", "cpu", "--no-progress",
                "--no-small", "--workers", "0", "--ckpt-every", "1", *HEAD, *extra]

    def store(self, name: str = "toy") -> Path:
        return Path(make_train_store(self.tmp, name, n=4))

    def tiny_run(self) -> tuple[Path, Path]:
        """(images folder, run folder): a real extraction with the tiny model and one training iteration on it,
        so `predict` rebuilds the run's extractor."""
        root = make_folder(self.tmp / "data", stems=("a", "b"))
        code, out, err = invoke(*self.tiny_extract("folder", root))
        assert code == 0, err
        run = self.tmp / "run"
        code, _, err = invoke(*self.train(out.strip().splitlines()[-1], run, "--iters", "1"))
        assert code == 0, err
        return root / "images", run

    def trained(self, *extra) -> Path:
        """A run folder of a real (two-iteration, tiny-head) training on a real store."""
        store, run = self.store(), self.tmp / "run"
        code, _, err = invoke(*self.train(store, run, "--iters", "2", *extra))
        assert code == 0, err
        return run


def _mount_tmpfs(s: Setup, where: Path) -> None:
    where.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(where)],
                      capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN), which this machine does not give")
    s.defer(lambda: subprocess.run(["umount", "-l", str(where)], capture_output=True))


def _truncate(path: Path, keep: int = 40) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _edit_attrs(store: Path, edit) -> None:
    meta = json.loads((store / "zarr.json").read_text())
    edit(meta["attributes"])
    (store / "zarr.json").write_text(json.dumps(meta))


# --------------------------------------------------------------------------------------------- setups
def read_only_cache_root(s: Setup):
    """1: an existing cache root on a read-only filesystem; the store there does not exist yet."""
    root = make_figaro(s.tmp / "fig", "Training", frames=(1, 2))
    ro = s.tmp / "ro"
    _mount_tmpfs(s, ro)
    (ro / "old.txt").write_text("kept")
    subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
    return s.tiny_extract("figaro", root, cache_root=ro)


def repair_on_read_only_store(s: Setup):
    """1: --repair of a store on a read-only filesystem (one of its shards lost)."""
    import shutil

    ro = s.tmp / "ro"
    _mount_tmpfs(s, ro)
    store = Path(shutil.copytree(s.store(), ro / "toy.zarr"))
    next(p for p in (store / "masks" / "c").rglob("*") if p.is_file()).unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
    return ["cache", "verify", store, "--repair"]


def group_metadata_truncated(s: Setup):
    store = s.store()
    _truncate(store / "zarr.json")
    return ["cache", "info", store]


def group_metadata_deleted(s: Setup):
    store = s.store()
    (store / "zarr.json").unlink()
    return ["cache", "verify", store]


def array_metadata_truncated(s: Setup):
    store = s.store()
    _truncate(store / "masks" / "zarr.json")
    return ["cache", "verify", store]


def level_metadata_deleted_train(s: Setup):
    store = s.store()
    (store / "features" / "up_blocks_1" / "zarr.json").unlink()
    return s.train(store, s.tmp / "run", "--iters", "1")


def level_metadata_deleted_extract(s: Setup):
    """A damaged store where extract would reuse it: one line, never rebuilt over."""
    root = make_folder(s.tmp / "data", stems=("a", "b"))
    code, out, err = invoke(*s.tiny_extract("folder", root))
    assert code == 0, err
    store = Path(out.strip().splitlines()[-1])
    (store / "features" / "unet_up_blocks_2" / "zarr.json").unlink()
    return s.tiny_extract("folder", root)


def _named_store(s: Setup) -> Path:
    """A store of a real extraction, named <fingerprint16>-<data12>.zarr as extract names it."""
    root = make_folder(s.tmp / "data", stems=("a", "b"))
    code, out, err = invoke(*s.tiny_extract("folder", root))
    assert code == 0, err
    return Path(out.strip().splitlines()[-1])


def fingerprint_edited(s: Setup):
    store = s.store()
    _edit_attrs(store, lambda a: a.update(fingerprint="0" * 64))
    return ["cache", "verify", store]


def fingerprint_inputs_edited(s: Setup):
    store = s.store()
    _edit_attrs(store, lambda a: a["fingerprint_inputs"]["model"].update(name="another-model"))
    return ["cache", "verify", store]


def both_edited_name_disagrees(s: Setup):
    """Inputs and fingerprint edited together, consistently: only the store's name gives it away."""
    from hairdiff.cache import fingerprint

    store = _named_store(s)

    def edit(a):
        a["fingerprint_inputs"]["prompt"] = "A photo of a cat."
        a["fingerprint"] = fingerprint(a["fingerprint_inputs"])
    _edit_attrs(store, edit)
    return ["cache", "verify", store]


def data_key_edited(s: Setup):
    store = _named_store(s)
    _edit_attrs(store, lambda a: a.update(data_key="f" * 64))
    return ["cache", "verify", store]


def two_files_one_id(s: Setup):
    root = make_folder(s.tmp / "data", stems=("x", "y"), ext=".jpg")
    make_folder(s.tmp / "other", stems=("x",), ext=".png")
    os.replace(s.tmp / "other" / "images" / "x.png", root / "images" / "x.png")
    return s.tiny_extract("folder", root)


def two_celebamask_files_one_id(s: Setup):
    root = make_celebamask(s.tmp / "CelebAMask-HQ", ids=(0, 1), no_hair=())
    (root / "CelebA-HQ-img" / "01.jpg").write_bytes((root / "CelebA-HQ-img" / "1.jpg").read_bytes())
    return s.tiny_extract("celebamask", root)


def dangling_symlink(s: Setup):
    root = make_folder(s.tmp / "data", stems=("a", "b", "c"))
    (root / "images" / "b.png").unlink()
    (root / "images" / "b.png").symlink_to(s.tmp / "elsewhere" / "b.png")
    return s.tiny_extract("folder", root, "--shard-size", "1")


def id_with_view_separator(s: Setup, *views):
    root = make_folder(s.tmp / "data", stems=("a", "b@flip"))
    return s.tiny_extract("folder", root, *views)


def masks_folder_missing(s: Setup):
    root = make_folder(s.tmp / "data", stems=("a", "b"))
    for p in (root / "masks").iterdir():
        p.unlink()
    (root / "masks").rmdir()
    return s.tiny_extract("folder", root)


def figaro_masks_all_gone(s: Setup):
    root = make_figaro(s.tmp / "Figaro1k", "Training", frames=(1, 2))
    for p in (root / "GT" / "Training").iterdir():
        p.unlink()
    return s.tiny_extract("figaro", root)


def celebamask_annotation_folder_missing(s: Setup):
    root = make_celebamask(s.tmp / "CelebAMask-HQ", ids=(0, 2001), no_hair=())
    anno = root / "CelebAMask-HQ-mask-anno" / "1"
    for p in anno.iterdir():
        p.unlink()
    anno.rmdir()
    return s.tiny_extract("celebamask", root)


def celebamask_image_not_annotated(s: Setup):
    """An image without any part mask is not a hair-free person: a bad sample, --on-error stop."""
    root = make_celebamask(s.tmp / "CelebAMask-HQ", ids=(0, 1), no_hair=())
    for p in (root / "CelebAMask-HQ-mask-anno" / "0").glob("00001_*.png"):
        p.unlink()
    return s.tiny_extract("celebamask", root, "--shard-size", "1")


def _best(run: Path, iteration: int = 7) -> Path:
    """RUN/best/ as `train --val` writes it, for the run's own head."""
    from hairdiff.model.best import save_best
    from hairdiff.model.trained import load_head

    head, meta = load_head(run)
    save_best(run, head, iteration=iteration, metrics={"mIoU": 50.0}, meta=meta)
    return run / "best" / f"head_{iteration:08d}.safetensors"


def best_head_missing_eval(s: Setup):
    run = make_run(s.tmp)
    _best(run).unlink()
    return ["eval", "--run", run, "--cache", s.tmp / "store.zarr", "--out", s.tmp / "eval", "--device", "cpu"]


def best_head_missing_predict(s: Setup):
    run = make_run(s.tmp)
    _best(run).unlink()
    img = s.tmp / "photo.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(img)
    return ["predict", img, "--run", run, "--out", s.tmp / "pred", "--device", "cpu"]


def best_json_truncated(s: Setup):
    run = make_run(s.tmp)
    _best(run)
    _truncate(run / "best" / "best.json")
    return ["eval", "--run", run, "--cache", s.tmp / "store.zarr", "--out", s.tmp / "eval", "--device", "cpu"]


def run_json_truncated(s: Setup):
    run = make_run(s.tmp)
    _truncate(run / "run.json")
    return ["eval", "--run", run, "--cache", s.tmp / "store.zarr", "--out", s.tmp / "eval", "--device", "cpu"]


def final_head_missing(s: Setup):
    run = make_run(s.tmp)
    (run / "head.safetensors").unlink()
    return ["eval", "--run", run, "--cache", s.tmp / "store.zarr", "--out", s.tmp / "eval", "--device", "cpu"]


def resume_checkpoint_truncated(s: Setup):
    run = s.trained("--stop-at", "1")
    _truncate(run / "checkpoints" / "iter_00000001" / "model.safetensors", 100)
    return s.train(s.tmp / "toy.zarr", run, "--iters", "2", "--resume")


def resume_checkpoint_state_deleted(s: Setup):
    """The newest checkpoint lost its state.json: said, never skipped for the one before it."""
    run = s.trained("--stop-at", "2")
    (run / "checkpoints" / "iter_00000002" / "state.json").unlink()
    return s.train(s.tmp / "toy.zarr", run, "--iters", "3", "--resume")


def predict_dangling_link_in_folder(s: Setup):
    images, run = s.tiny_run()
    (images / "c.png").symlink_to(s.tmp / "gone.png")
    return ["predict", images, "--run", run, "--out", s.tmp / "pred", "--device", "cpu"]


def resume_run_json_truncated(s: Setup):
    run = s.trained()
    _truncate(run / "run.json")
    return s.train(s.tmp / "toy.zarr", run, "--iters", "2", "--resume")


def checkpoint_state_truncated_eval(s: Setup):
    run = s.trained("--stop-at", "1")
    _truncate(run / "checkpoints" / "iter_00000001" / "state.json")
    return ["eval", "--run", run, "--cache", s.tmp / "toy.zarr", "--out", s.tmp / "eval", "--device", "cpu"]


def out_is_a_file(s: Setup):
    (s.tmp / "taken").write_text("a file")
    return s.train(s.store(), s.tmp / "taken", "--iters", "1")


def out_under_a_file(s: Setup):
    run = make_run(s.tmp)
    (s.tmp / "taken").write_text("a file")
    return ["eval", "--run", run, "--cache", s.tmp / "store.zarr", "--out", s.tmp / "taken" / "eval"]


def cache_root_is_a_file(s: Setup):
    (s.tmp / "taken").write_text("a file")
    return ["cache", "ls", "--cache-root", s.tmp / "taken"]


def push_dest_under_a_file(s: Setup):
    store = s.store()
    (s.tmp / "taken").write_text("a file")
    return ["cache", "push", store, s.tmp / "taken" / "copy.zarr"]


def report_under_a_file(s: Setup):
    root = make_folder(s.tmp / "data", stems=("a",))
    (s.tmp / "taken").write_text("a file")
    return s.tiny_extract("folder", root, "--report", s.tmp / "taken" / "r.json")


def models_env_read_only(s: Setup):
    """The tiny model is built on first use into HAIRDIFF_MODELS: read-only there is one line."""
    root = make_folder(s.tmp / "data", stems=("a",))
    ro = s.tmp / "ro"
    _mount_tmpfs(s, ro)
    subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
    os.environ["HAIRDIFF_MODELS"] = str(ro / "models")  # restored by the test's monkeypatch
    return s.tiny_extract("folder", root)


def models_env_is_a_file(s: Setup):
    root = make_folder(s.tmp / "data", stems=("a",))
    (s.tmp / "taken").write_text("a file")
    os.environ["HAIRDIFF_MODELS"] = str(s.tmp / "taken")  # restored by the test's monkeypatch
    return s.tiny_extract("folder", root)


# ------------------------------------------------------------------------------ 7: paths that must differ
def out_inside_store_train(s: Setup):
    store = s.store()
    return s.train(store, store / "run", "--iters", "1")


def out_inside_store_eval(s: Setup):
    run = make_run(s.tmp)
    store = s.store()
    return ["eval", "--run", run, "--cache", store, "--out", store / "features" / "eval", "--device", "cpu"]


def out_inside_future_store_predict(s: Setup):
    """A *.zarr folder that does not exist yet is where a store goes: not an output folder either."""
    from PIL import Image

    run = make_run(s.tmp)
    Image.new("RGB", (8, 8)).save(s.tmp / "photo.png")
    return ["predict", s.tmp / "photo.png", "--run", run, "--out", s.tmp / "cache" / "x.zarr" / "pred", "--device",
            "cpu"]


def val_is_the_training_store(s: Setup):
    store = s.store()
    (s.tmp / "alias.zarr").symlink_to(store)  # the same store by another name
    return s.train(store, s.tmp / "run", "--iters", "1", "--val", s.tmp / "alias.zarr")


def _folder_stores(s: Setup, *extra) -> tuple[Path, Path]:
    """(the store of a folder dataset's images a-d, a store of images b and x of the same folder by --ids)."""
    root = make_folder(s.tmp / "data", stems=("a", "b", "c", "d"))
    full, _ = _extract_ok(s, *s.tiny_extract("folder", root, *extra))
    (s.tmp / "ids.txt").write_text("c\na\n")
    part, _ = _extract_ok(s, *s.tiny_extract("folder", root, "--ids", s.tmp / "ids.txt"))
    return full, part


def val_shares_training_images(s: Setup):
    full, part = _folder_stores(s)
    return s.train(full, s.tmp / "run", "--iters", "1", "--val", part)


def val_shares_images_of_a_views_store(s: Setup):
    """Trained on a store with views: a store of the same files without views (from a copy of the dataset,
    elsewhere) holds the same images."""
    import shutil

    root = make_folder(s.tmp / "data", stems=("a", "b"))
    views, _ = _extract_ok(s, *s.tiny_extract("folder", root, "--views", "flip"))
    plain, _ = _extract_ok(s, *s.tiny_extract("folder", shutil.copytree(root, s.tmp / "copy")))
    return s.train(views, s.tmp / "run", "--iters", "1", "--val", plain)


def resume_on_another_store(s: Setup):
    run = s.trained("--stop-at", "1")
    other = make_train_store(s.tmp, "other", n=4, seed=5)  # same features (fingerprint), other images
    return s.train(other, run, "--iters", "2", "--resume")


def resume_finished_run_on_another_store(s: Setup):
    """A finished run is not "nothing to do" for other stores: its results are not theirs."""
    run = s.trained()
    other = make_train_store(s.tmp, "other", n=4, seed=5)
    return s.train(other, run, "--iters", "2", "--resume")


def resume_finished_run_with_other_settings(s: Setup):
    run = s.trained()
    return s.train(s.tmp / "toy.zarr", run, "--iters", "2", "--resume", "--lr", "0.5")


def predict_out_is_an_images_folder(s: Setup):
    images, run = s.tiny_run()
    return ["predict", images, "--run", run, "--out", images, "--device", "cpu"]


def training_store_given_twice(s: Setup):
    store = s.store()
    return s.train(store, s.tmp / "run", "--iters", "1", "--cache", s.tmp / "." / "toy.zarr")


def training_stores_share_images(s: Setup):
    """A store with views beside the store of its images: the images would be trained on twice."""
    root = make_folder(s.tmp / "data", stems=("a", "b"))
    views, _ = _extract_ok(s, *s.tiny_extract("folder", root, "--views", "flip"))
    plain, _ = _extract_ok(s, *s.tiny_extract("folder", root))
    return s.train(views, s.tmp / "run", "--iters", "1", "--cache", plain)


def cache_root_inside_a_store(s: Setup):
    root = make_folder(s.tmp / "data", stems=("a",))
    return s.tiny_extract("folder", root, cache_root=s.store() / "more")


def push_into_itself(s: Setup):
    store = s.store()
    return ["cache", "push", store, store / "copies"]


def damaged(name, setup, code, words, marks=()):
    """setup(Setup) -> the command line; words: what the error line must name ({tmp}: the test's folder)."""
    return pytest.param(setup, code, words, id=name, marks=marks)


DAMAGED = [
    damaged("1-extract-read-only-cache-root", read_only_cache_root, 2,  # issue 26: before the model loads
            ["cannot write to the cache root {tmp}/ro (Read-only file system)", "writable folder"]),
    damaged("1-verify-repair-read-only", repair_on_read_only_store, 1,
            ["cannot repair {tmp}/ro/toy.zarr (Read-only file system)", "no done sample was lost"]),
    damaged("2-info-group-metadata-truncated", group_metadata_truncated, 2,
            ["{tmp}/toy.zarr/zarr.json: does not decode", "delete {tmp}/toy.zarr"]),
    damaged("2-verify-group-metadata-deleted", group_metadata_deleted, 1, ["{tmp}/toy.zarr/zarr.json", "damaged"]),
    damaged("2-verify-array-metadata-truncated", array_metadata_truncated, 1,
            ["{tmp}/toy.zarr/masks/zarr.json", "damaged"]),
    damaged("2-train-level-metadata-deleted", level_metadata_deleted_train, 2,
            ["{tmp}/toy.zarr/features/up_blocks_1/zarr.json: missing"]),
    damaged("2-extract-level-metadata-deleted", level_metadata_deleted_extract, 2,
            ["/features/unet_up_blocks_2/zarr.json: missing"]),
    damaged("3-verify-fingerprint-edited", fingerprint_edited, 1, ["{tmp}/toy.zarr/zarr.json", "damaged"]),
    damaged("3-verify-fingerprint-inputs-edited", fingerprint_inputs_edited, 1, ["{tmp}/toy.zarr/zarr.json"]),
    damaged("3-verify-name-disagrees", both_edited_name_disagrees, 1, ["{tmp}/cache/folder/all/", "damaged"]),
    damaged("3-verify-data-key-edited", data_key_edited, 1, ["{tmp}/cache/folder/all/", "damaged"]),
    damaged("4-extract-two-files-one-id", two_files_one_id, 2,
            ["{tmp}/data/images/x.jpg and {tmp}/data/images/x.png both claim the sample id 'x'"]),
    damaged("4-extract-celebamask-1-and-01", two_celebamask_files_one_id, 2, ["01.jpg", "1.jpg", "'1'"]),
    damaged("5-extract-dangling-symlink", dangling_symlink, 1,
            ["{tmp}/data/images/b.png: a symbolic link to {tmp}/elsewhere/b.png, which does not exist"]),
    damaged("10-extract-id-with-at", id_with_view_separator, 2, ["b@flip.png", "'@'", "rename"]),
    damaged("10-extract-views-id-with-at", lambda s: id_with_view_separator(s, "--views", "flip"), 2,
            ["b@flip.png", "'@'", "rename"]),
    damaged("12-extract-masks-folder-missing", masks_folder_missing, 2, ["{tmp}/data/masks", "masks/"]),
    damaged("12-extract-figaro-masks-all-gone", figaro_masks_all_gone, 2,
            ["{tmp}/Figaro1k/GT/Training holds none of the annotations"]),
    damaged("12-extract-celebamask-folder-missing", celebamask_annotation_folder_missing, 2,
            ["CelebAMask-HQ-mask-anno/1 is missing"]),
    damaged("12-extract-celebamask-image-not-annotated", celebamask_image_not_annotated, 1,
            ["00001_hair.png: image 1 has no annotation at all"]),
    damaged("8-eval-best-head-missing", best_head_missing_eval, 2,
            ["{tmp}/run/best/head_00000007.safetensors is missing", "best.json names it", "RUN/best/"]),
    damaged("8-predict-best-head-missing", best_head_missing_predict, 2,
            ["{tmp}/run/best/head_00000007.safetensors is missing"]),
    damaged("8-eval-best-json-truncated", best_json_truncated, 2, ["{tmp}/run/best/best.json is damaged"]),
    damaged("8-eval-run-json-truncated", run_json_truncated, 2, ["{tmp}/run/run.json is damaged", "--resume"]),
    damaged("8-eval-final-head-missing", final_head_missing, 2, ["{tmp}/run/head.safetensors is missing"]),
    damaged("8-resume-checkpoint-truncated", resume_checkpoint_truncated, 2,
            ["{tmp}/run/checkpoints/iter_00000001/model.safetensors is damaged", "remove that checkpoint"]),
    damaged("8-resume-run-json-truncated", resume_run_json_truncated, 2, ["{tmp}/run/run.json is damaged"]),
    damaged("8-resume-checkpoint-state-deleted", resume_checkpoint_state_deleted, 2,
            ["{tmp}/run/checkpoints/iter_00000002/state.json is missing", "remove that checkpoint"]),
    damaged("5-predict-dangling-link-in-folder", predict_dangling_link_in_folder, 1,
            ["{tmp}/data/images/c.png: a symbolic link to {tmp}/gone.png, which does not exist"]),
    damaged("8-eval-checkpoint-state-truncated", checkpoint_state_truncated_eval, 2,
            ["{tmp}/run/checkpoints/iter_00000001/state.json is damaged"]),
    damaged("13-train-out-is-a-file", out_is_a_file, 2, ["--out {tmp}/taken: not a folder"]),
    damaged("13-eval-out-under-a-file", out_under_a_file, 2, ["--out {tmp}/taken/eval", "{tmp}/taken is a file"]),
    damaged("13-ls-cache-root-is-a-file", cache_root_is_a_file, 2, ["{tmp}/taken is a file"]),
    damaged("13-extract-models-env-is-a-file", models_env_is_a_file, 2, ["HAIRDIFF_MODELS={tmp}/taken"]),
    damaged("13-extract-models-read-only", models_env_read_only, 2,
            ["cannot build the tiny model in {tmp}/ro/models (Read-only file system)", "HAIRDIFF_MODELS"]),
    damaged("13-push-dest-under-a-file", push_dest_under_a_file, 2, ["DEST {tmp}/taken/copy.zarr", "is a file"]),
    damaged("13-extract-report-under-a-file", report_under_a_file, 2, ["--report's folder {tmp}/taken"]),
    damaged("7-train-out-inside-store", out_inside_store_train, 2,
            ["--out {tmp}/toy.zarr/run lies inside the feature store {tmp}/toy.zarr"]),
    damaged("7-eval-out-inside-store", out_inside_store_eval, 2,
            ["--out {tmp}/toy.zarr/features/eval lies inside the feature store {tmp}/toy.zarr"]),
    damaged("7-predict-out-inside-future-store", out_inside_future_store_predict, 2,
            ["--out {tmp}/cache/x.zarr/pred lies inside the feature store {tmp}/cache/x.zarr"]),
    damaged("7-train-val-is-training-store", val_is_the_training_store, 2,
            ["--val {tmp}/alias.zarr is the training store {tmp}/toy.zarr"]),
    damaged("7-train-val-shares-training-images", val_shares_training_images, 2,
            ["shares 2 of its 2 images with the training store {tmp}/cache/folder/all/", "('a', 'c')"]),
    damaged("7-train-val-same-images-as-views-store", val_shares_images_of_a_views_store, 2,
            ["shares 2 of its 2 images with the training store {tmp}/cache/folder/all/"]),
    damaged("7-resume-on-another-store", resume_on_another_store, 2,
            ["--resume: {tmp}/run was trained on {tmp}/toy.zarr (toy/train)", "--cache gives {tmp}/other.zarr"]),
    damaged("7-resume-finished-run-on-another-store", resume_finished_run_on_another_store, 2,
            ["--resume: {tmp}/run was trained on {tmp}/toy.zarr", "({tmp}/run/run.json)", "{tmp}/other.zarr"]),
    damaged("11-resume-finished-run-with-other-settings", resume_finished_run_with_other_settings, 2,
            ["{tmp}/run/run.json was made with other settings (lr: checkpoint 0.0001 vs now 0.5)"]),
    damaged("7-predict-out-is-an-images-folder", predict_out_is_an_images_folder, 2,
            ["--out {tmp}/data/images is the folder {tmp}/data/images of IMAGES"]),
    damaged("7-train-store-given-twice", training_store_given_twice, 2,
            ["--cache {tmp}/toy.zarr is --cache {tmp}/toy.zarr", "trained on twice"]),
    damaged("7-train-stores-share-images", training_stores_share_images, 2,
            ["shares 2 images with --cache {tmp}/cache/folder/all/", "trained on twice"]),
    damaged("7-extract-cache-root-inside-a-store", cache_root_inside_a_store, 2,
            ["--cache-root {tmp}/toy.zarr/more lies inside the feature store {tmp}/toy.zarr"]),
    damaged("7-push-into-itself", push_into_itself, 2, ["DEST {tmp}/toy.zarr/copies", "the store {tmp}/toy.zarr"]),
]


def _contents(root: Path) -> dict:
    """Every file under root (links as their target's name) -> a digest of its bytes."""
    out = {}
    for p in root.rglob("*"):
        if p.is_symlink():
            out[p.relative_to(root)] = "link:" + os.readlink(p)
        elif p.is_file():
            out[p.relative_to(root)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="session")
def tiny_models():
    """The session's one build of the tiny model (tests/conftest.py; its folder is the user's, not the case's)."""
    return Path(os.environ["HAIRDIFF_MODELS"])


@pytest.fixture()
def setup(tmp_path, monkeypatch, tiny_models):
    monkeypatch.setenv("HAIRDIFF_CACHE", str(tmp_path / "home-cache"))
    monkeypatch.setenv("HAIRDIFF_MODELS", str(tiny_models))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    finalizers: list = []
    yield Setup(tmp_path, finalizers)
    for fn in reversed(finalizers):
        fn()


@pytest.mark.parametrize("build,code,words", DAMAGED)
def test_bad_input_is_one_line_and_keeps_what_was_written(build, code, words, setup):
    args = build(setup)
    before = _contents(setup.tmp)
    got, _, err = invoke(*args)
    errors = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0] and "Traceback" not in err, err
    assert got == code, (got, err)
    for w in words:
        assert w.format(tmp=setup.tmp) in errors[0], (w.format(tmp=setup.tmp), errors[0])
    after = _contents(setup.tmp)
    assert {k: v for k, v in before.items() if after.get(k) != v} == {}, "files lost or changed"


# =========================================================================================================
# Cases that used to exit 0 with a wrong result (issue 18): each now gives the right one, checked on what
# the next stage receives.
# =========================================================================================================
def _extract_ok(setup: Setup, *args) -> tuple[Path, str]:
    code, out, err = invoke(*args)
    assert code == 0, err
    return Path(out.strip().splitlines()[-1]), err


def test_5_an_unreadable_image_is_skipped_by_name_with_on_error_skip(setup):
    from hairdiff.cache import FeatureStore

    args = dangling_symlink(setup)
    store, err = _extract_ok(setup, *args, "--on-error", "skip", "--report", setup.tmp / "report.json")
    link = setup.tmp / "data" / "images" / "b.png"
    assert f"skipped {link}: a symbolic link to" in err, err
    report = json.loads((setup.tmp / "report.json").read_text())
    assert [s["id"] for s in report["skipped"]] == ["b"]
    s = FeatureStore.open(store)
    assert s.ids == ["a", "b", "c"] and s.done_mask().tolist() == [True, False, True]


def test_12_an_annotation_whose_extension_differs_in_case_is_used(setup):
    from hairdiff.cache import FeatureStore
    from tests.fixtures.layouts import expected_label

    root = make_folder(setup.tmp / "data", stems=("a", "b"), size=(32, 48))
    (root / "masks" / "a.png").rename(root / "masks" / "a.PNG")
    store, _ = _extract_ok(setup, *setup.tiny_extract("folder", root))
    s = FeatureStore.open(store)
    assert s.done_mask().all()
    np.testing.assert_array_equal(s.read_label(0), expected_label(32, 48))


def test_12_hair_free_images_are_counted_where_the_layout_defines_them(setup):
    from hairdiff.cache import FeatureStore

    root = make_celebamask(setup.tmp / "CelebAMask-HQ", ids=(0, 1, 2), no_hair=(1,))
    store, err = _extract_ok(setup, *setup.tiny_extract("celebamask", root, "--report", setup.tmp / "r.json"))
    assert "1 image(s) labelled hair-free: annotated, but without a hair annotation file" in err, err
    assert json.loads((setup.tmp / "r.json").read_text())["no_hair"] == 1
    s = FeatureStore.open(store)
    assert not s.read_label(1).any() and s.read_label(0).any()


def test_13_paths_with_spaces_brackets_and_glob_characters_work_everywhere(setup, monkeypatch):
    """Every path the user gives (cache root, --out, HAIRDIFF_CACHE, HAIRDIFF_MODELS, --root) holds a space,
    [brackets], *, ? and "::" (fsspec's chaining): extract, ls, verify, train, eval and predict all take
    them as plain paths."""
    import shutil

    weird = setup.tmp / "my data [v1] *? ::x"
    monkeypatch.setenv("HAIRDIFF_CACHE", str(weird / "home cache [x]"))
    shutil.copytree(os.environ["HAIRDIFF_MODELS"], weird / "models [m]")  # the tiny model, built once
    monkeypatch.setenv("HAIRDIFF_MODELS", str(weird / "models [m]"))
    root = make_folder(weird / "set [a]", stems=("a", "b", "c", "d"))
    cache_root = weird / "cache [1]"
    store, err = _extract_ok(setup, *setup.tiny_extract("folder", root, cache_root=cache_root))
    assert str(store).startswith(str(cache_root))
    assert f"report: {weird / 'home cache [x]' / 'reports'}" in err, err  # said as it is, [x] included
    code, out, err = invoke("cache", "ls", "--cache-root", cache_root)
    assert code == 0 and out.strip().splitlines()[-1].endswith(str(store)), (out, err)
    code, out, err = invoke("cache", "verify", store)
    assert code == 0 and "4 of 4 samples done and readable" in out, (out, err)
    run = weird / "run [*]"
    code, out, err = invoke(*setup.train(store, run, "--iters", "1"))
    assert code == 0 and out.strip().splitlines()[-1] == str(run), err
    code, out, err = invoke("eval", "--run", run, "--cache", store, "--out", weird / "eval [?]", "--device", "cpu")
    assert code == 0 and out.strip().splitlines()[-1] == str(weird / "eval [?]" / "metrics.json"), err
    code, out, err = invoke("predict", root / "images", "--run", run, "--out", weird / "pred [*]", "--device", "cpu")
    assert code == 0 and f"predicting with the final head: {run / 'head.safetensors'}" in err, err
    assert len(json.loads((weird / "pred [*]" / "predictions.json").read_text())["predictions"]) == 4


def test_13_an_explicit_cache_root_never_reads_a_broken_hairdiff_cache(setup, monkeypatch):
    (setup.tmp / "taken").write_text("a file")
    monkeypatch.setenv("HAIRDIFF_CACHE", str(setup.tmp / "taken"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(setup.tmp / "xdg"))  # where local things go instead
    root = make_folder(setup.tmp / "data", stems=("a",))
    store, err = _extract_ok(setup, *setup.tiny_extract("folder", root))
    assert str(store).startswith(str(setup.tmp / "cache"))
    assert f"report: {setup.tmp / 'xdg' / 'hairdiff' / 'reports'}" in err, err
    code, out, err = invoke("cache", "ls", "--cache-root", setup.tmp / "cache")
    assert code == 0 and str(store) in out, err
    # without --cache-root the broken variable is the store root: one line naming it
    code, _, err = invoke("extract", "--dataset", "folder", "--root", root, "--model", "tiny")
    assert code == 2 and err.strip().splitlines()[-1].startswith(f"error: cannot write to the cache root "
                                                                 f"{setup.tmp / 'taken'}"), err


def test_9_predict_uses_the_head_eval_uses_and_says_which(setup):
    import torch

    from hairdiff.model.best import save_best
    from hairdiff.model.trained import load_head

    root = make_folder(setup.tmp / "data", stems=("a", "b"))
    store, _ = _extract_ok(setup, *setup.tiny_extract("folder", root))
    run = setup.tmp / "run"
    code, _, err = invoke(*setup.train(store, run, "--iters", "1"))
    assert code == 0, err
    # A best head unlike the final one (as a validated run keeps an earlier iteration): every query says
    # "hair", so every pixel of its masks is hair.
    head, meta = load_head(run)
    with torch.no_grad():
        for name, module in head.named_modules():
            if name.endswith("class_embed"):  # logits: background, hair, no object
                module.weight.zero_()
                module.bias.copy_(torch.tensor([-10.0, 10.0, -10.0]))
    save_best(run, head, iteration=5, metrics={"mIoU": 12.5}, meta=meta)
    best = str(run / "best" / "head_00000005.safetensors")

    def predict(*extra):
        out = setup.tmp / f"pred{len(extra)}"
        code, _, err = invoke("predict", root / "images", "--run", run, "--out", out, "--device", "cpu", *extra)
        assert code == 0, err
        record = json.loads((out / "predictions.json").read_text())
        return record["head"], [r["hair_fraction"] for r in record["predictions"]], err

    used, hair, err = predict()
    assert used["source"] == "best" and used["weights"] == best and used["iteration"] == 5, used
    assert f"predicting with the best validated head: {best} (iteration 5, val mIoU 12.50)" in err, err
    assert hair == [1.0, 1.0]  # the masks come from the weights it names
    final, final_hair, err = predict("--no-best")
    assert final["source"] == "final" and "predicting with the final head" in err, err
    assert final_hair != hair
    code, out, err = invoke("eval", "--run", run, "--cache", store, "--out", setup.tmp / "eval", "--device", "cpu")
    assert code == 0, err
    assert json.loads((setup.tmp / "eval" / "metrics.json").read_text())["head"]["weights"] == used["weights"]


def test_6_a_partial_store_is_scored_as_part_of_its_split_everywhere(setup):
    """eval of a store with 2 of its 5 images extracted: stdout, metrics.json and metrics.md (beside the paper's
    rows) say "2 of 5 images (3 not extracted yet)"; train --val logs the same coverage per validation."""
    from tests.fixtures.stores import INPUTS, make_eval_store, synthetic_samples

    store = make_eval_store(setup.tmp, "figaro", synthetic_samples(5), str(setup.tmp), done=[0, 3])
    run = make_run(setup.tmp)
    code, out, err = invoke("eval", "--run", run, "--cache", store, "--out", setup.tmp / "eval", "--device", "cpu",
                            "--overlays", "0")
    assert code == 0, err
    said = "2 of 5 images (3 not extracted yet)"
    assert f"partial: scored {said} of figaro/test (40.0%)" in out and said in err, (out, err)
    m = json.loads((setup.tmp / "eval" / "metrics.json").read_text())
    assert (m["images"], m["images_total"], m["coverage"]) == (2, 5, 0.4)
    md = (setup.tmp / "eval" / "metrics.md").read_text()
    ours = [ln for ln in md.splitlines() if ln.startswith("| **hairdiff (this run)**")]
    assert len(ours) == 2 and all(ln.endswith(f"| {said} |") for ln in ours), md
    assert f"**Partial: {said}" in md and md.index("**Partial") < md.index("(paper)")
    # A whole store says so too, and nothing partial.
    (setup.tmp / "w").mkdir()
    whole = make_eval_store(setup.tmp / "w", "figaro", synthetic_samples(5), str(setup.tmp))
    code, out, err = invoke("eval", "--run", run, "--cache", whole, "--out", setup.tmp / "eval2", "--device", "cpu",
                            "--overlays", "0")
    assert code == 0 and "partial:" not in out and "all 5 images" in err, (out, err)

    # train --val on a partial store: the announcement and every validation row of log.jsonl carry the coverage.
    train_inputs = {"model": {"kind": "toy", "name": "toy-encoder"}, "levels": [lv for lv in INPUTS["taps"]],
                    "preprocessing": INPUTS["preprocessing"]}
    val = make_eval_store(setup.tmp / "w", "toy", synthetic_samples(5), str(setup.tmp), done=[1], inputs=train_inputs,
                          split="val")
    code, _, err = invoke(*setup.train(setup.store(), setup.tmp / "run2", "--iters", "2", "--val", val,
                                       "--val-every", "1"))
    assert code == 0, err
    assert f"validating on 1 of 5 images (4 not extracted yet) of --val {val}" in err, err
    rows = [json.loads(ln) for ln in (setup.tmp / "run2" / "log.jsonl").read_text().splitlines()]
    assert [(r["val_images"], r["val_images_total"], r["val_coverage"]) for r in rows] == [(1, 5, 0.2)] * 2


def test_7_eval_of_a_store_holding_training_images_warns_also_through_views_and_ids(setup):
    """Trained on a store with views of images a-d: scoring the same images without views warns as scoring the
    training store does; trained on an --ids subset (a, c), scoring all four says 2 of them were trained on."""
    root = make_folder(setup.tmp / "data", stems=("a", "b", "c", "d"))
    views, _ = _extract_ok(setup, *setup.tiny_extract("folder", root, "--views", "flip"))
    full, _ = _extract_ok(setup, *setup.tiny_extract("folder", root))
    (setup.tmp / "ids.txt").write_text("c\na\n")
    part, _ = _extract_ok(setup, *setup.tiny_extract("folder", root, "--ids", setup.tmp / "ids.txt"))

    def scored(train_store, name):
        run = setup.tmp / f"run-{name}"
        code, _, err = invoke(*setup.train(train_store, run, "--iters", "1"))
        assert code == 0, err
        out = setup.tmp / f"eval-{name}"
        code, _, err = invoke("eval", "--run", run, "--cache", full, "--out", out, "--device", "cpu", "--overlays", "0")
        assert code == 0, err
        return err, json.loads((out / "metrics.json").read_text()), (out / "metrics.md").read_text()

    err, m, md = scored(views, "views")
    assert f"warning: {full} is a store this run trained on (folder/all, {views})" in err, err
    assert m["evaluated_on_training_store"] and m["training_images"] == 4 and "evaluated on training data" in md
    err, m, md = scored(part, "ids")
    assert f"warning: {full} holds 2 of its 4 images in a store this run trained on (folder/all, {part})" in err, err
    assert m["evaluated_on_training_store"] and m["training_images"] == 2
    assert "This store shares 2 of its 4 images with one the head was trained on" in md


# ------------------------------------------------------------- 11 and 14: reproduce and demo, checked first
def reproduce(s: Setup, *extra, out=None) -> list:
    return ["reproduce", "--dataset", "figaro", "--root", s.tmp / "fig", "--model", "tiny", "--iters", "1",
            "--cache-root", s.tmp / "cache", "--device", "cpu", "--out", out or s.tmp / "r", *extra]


def _ids(s: Setup, name: str, *ids) -> Path:
    path = s.tmp / name
    path.write_text("".join(f"{i}\n" for i in ids))
    return path


def _figaro(s: Setup, *splits) -> None:
    for split in splits or ("Training",):
        make_figaro(s.tmp / "fig", split, frames=range(1, 7) if split == "Training" else range(7, 9))


def _binary(path: Path) -> Path:
    path.write_bytes(b"\xff\xfe\x00\xd8")  # not UTF-8 text
    return path


REPRODUCE_REFUSALS = [  # (name, setup -> extra args, words of the error line); nothing may be extracted
    ("unknown-test-id", lambda s: ["--ids-train", _ids(s, "tr.txt", "Frame00001"),
                                   "--ids-test", _ids(s, "te.txt", "Frame00002", "Frame00099")],
     ["--ids-test {tmp}/te.txt: 1 id(s) are not images of figaro/Training under {tmp}/fig: Frame00099",
      "'Frame00001'"]),
    ("training-id-in-paper-test-split", lambda s: _figaro(s, "Training", "Testing") or [
        "--ids-train", _ids(s, "tr.txt", "Frame00001"), "--ids-test", _ids(s, "te.txt", "Frame00007", "Frame00002")],
     ["--ids-test {tmp}/te.txt: 1 id(s) are not images of figaro/Testing", "Frame00002"]),
    ("unknown-train-id", lambda s: ["--ids-train", _ids(s, "tr.txt", "nope"),
                                    "--ids-test", _ids(s, "te.txt", "Frame00002")],
     ["--ids-train {tmp}/tr.txt: 1 id(s) are not images of figaro/Training", "nope"]),
    ("ids-overlap", lambda s: ["--ids-train", _ids(s, "tr.txt", "Frame00001", "Frame00002"),
                               "--ids-test", _ids(s, "te.txt", "Frame00002", "Frame00003")],
     ["--ids-train {tmp}/tr.txt and --ids-test {tmp}/te.txt share 1 id(s) ('Frame00002')"]),
    ("ids-file-empty", lambda s: ["--ids-train", _ids(s, "tr.txt", "Frame00001"), "--ids-test", _ids(s, "te.txt")],
     ["--ids-test {tmp}/te.txt: the file holds no ids"]),
    ("ids-file-missing", lambda s: ["--ids-train", s.tmp / "gone.txt", "--ids-test", _ids(s, "te.txt", "Frame00002")],
     ["--ids-train {tmp}/gone.txt: ids file not found"]),
    ("ids-file-not-text", lambda s: ["--ids-train", _ids(s, "tr.txt", "Frame00001"),
                                     "--ids-test", _binary(s.tmp / "te.bin")],
     ["--ids-test {tmp}/te.bin: cannot read it"]),
    ("limit-too-small-for-a-stand-in", lambda s: ["--limit", "2"], ["{tmp}/fig has no Testing split and too few"]),
    ("out-is-a-file", lambda s: (s.tmp / "taken").write_text("x") and ["--out", s.tmp / "taken"],
     ["--out {tmp}/taken: not a folder"]),
    ("out-inside-a-store", lambda s: ["--out", s.tmp / "cache" / "figaro" / "Training" / "x.zarr" / "r"],
     ["--out {tmp}/cache/figaro/Training/x.zarr/r lies inside the feature store"]),
    ("out-is-the-dataset-root", lambda s: ["--out", s.tmp / "fig"],
     ["--out {tmp}/fig is the folder {tmp}/fig of --root"]),
    ("cache-root-inside-a-store", lambda s: ["--cache-root", s.tmp / "old.zarr" / "c"],
     ["--cache-root {tmp}/old.zarr/c lies inside the feature store {tmp}/old.zarr"]),
    ("root-missing", lambda s: ["--root", s.tmp / "nowhere"], ["--root {tmp}/nowhere: no such folder"]),
    ("cache-root-is-a-file", lambda s: (s.tmp / "taken").write_text("x") and ["--cache-root", s.tmp / "taken"],
     ["{tmp}/taken"]),
    ("root-without-figaro-splits", lambda s: (s.tmp / "empty").mkdir() or ["--root", s.tmp / "empty"],
     ["--root {tmp}/empty holds neither the Training nor the Testing split"]),
]


@pytest.mark.parametrize("name,extra,words", REPRODUCE_REFUSALS, ids=[r[0] for r in REPRODUCE_REFUSALS])
def test_14_reproduce_checks_everything_before_extracting_anything(name, extra, words, setup):
    _figaro(setup)
    args = reproduce(setup) + extra(setup)  # later options win: --root and --out may be given again
    before = _contents(setup.tmp)
    code, _, err = invoke(*args)
    errors = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0] and "Traceback" not in err, err
    assert code == 2, (code, err)
    for w in words:
        assert w.format(tmp=setup.tmp) in errors[0], (w.format(tmp=setup.tmp), errors[0])
    assert "loading model" not in err and not (setup.tmp / "cache").exists(), err  # nothing extracted
    assert _contents(setup.tmp) == before and not (setup.tmp / "r").exists()  # nothing written, OUT not made


def test_11_a_reproduce_folder_is_bound_to_its_settings(setup):
    """A finished reproduction, rerun with other settings: refused, naming each difference, before anything is
    extracted or trained, its report untouched; with the same settings it reports the same (nothing redone)."""
    _figaro(setup)
    ids_train, ids_test = _ids(setup, "tr.txt", "Frame00001", "Frame00002"), _ids(setup, "te.txt", "Frame00004")
    args = reproduce(setup, "--ids-train", ids_train, "--ids-test", ids_test)
    code, _, err = invoke(*args)
    assert code == 0, err
    r = setup.tmp / "r"
    before = _contents(setup.tmp)
    manifest = json.loads((r / "manifest.json").read_text())["reproduce"]
    assert manifest["recipe"]["iters"] == 1 and manifest["splits"]["train"]["count"] == 2

    def refused(*extra, edit=None, words=(), by="reproduce"):
        if edit:
            edit()
        code, _, err = invoke(*args, *extra)
        errors = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
        assert code == 2 and len(errors) == 1 and "loading model" not in err, err
        assert errors[0].startswith(f"error: {r} was made by `{by}` with other settings ("), errors[0]
        for w in words:
            assert w in errors[0], (w, errors[0])
        changed = {k for k, v in before.items() if _contents(setup.tmp).get(k) != v}
        changed.discard(Path("home-cache") / "file-digests.sqlite")  # the memo of file digests (extract/sources.py)
        assert changed <= {Path("tr.txt"), Path("fig/Original/Training/Frame00002-org.jpg")}, changed

    refused("--iters", "2", words=["recipe.iters: 1 -> 2"])
    refused("--limit", "5", words=["limit: null -> 5"])
    refused(edit=lambda: ids_train.write_text("Frame00001\nFrame00003\n"), words=["splits.train.ids: "])
    ids_train.write_text("Frame00001\nFrame00002\n")
    image = setup.tmp / "fig" / "Original" / "Training" / "Frame00002-org.jpg"
    kept = image.read_bytes()
    refused(edit=lambda: make_figaro(setup.tmp / "other", "Training", frames=(2,), size=(30, 41)) and image.write_bytes(
        (setup.tmp / "other" / "Original" / "Training" / "Frame00002-org.jpg").read_bytes()),
        words=["training_data: ", "the training images changed since OUT/run was trained on them"],
        by="reproduce-trained-on")  # a training image changed: other data, refused before extraction
    image.write_bytes(kept)
    code, _, err = invoke(*args)  # the settings it was made with: resumes, nothing to redo
    assert code == 0 and "computed 0" in err and "nothing to do" in err, err


def test_11_a_demo_folder_is_bound_to_its_settings(setup):
    args = ["demo", "--out", setup.tmp / "demo", "--train-images", "2", "--test-images", "1", "--size", "64",
            "--iters", "1"]
    code, _, err = invoke(*args)
    assert code == 0, err
    before = _contents(setup.tmp)
    code, _, err = invoke(*args[:3], "--train-images", "3", *args[5:])
    assert code == 2 and err.strip().splitlines()[-1] == (
        f"error: {setup.tmp / 'demo'} was made by `demo` with other settings (train_images: 2 -> 3): run it with the "
        "settings it was made with, or pass another --out (or delete it) to start afresh"), err
    assert _contents(setup.tmp) == before


def test_14_ctrl_c_in_reproduce_says_what_was_kept_and_how_to_continue(setup):
    """A real SIGINT while reproduce trains: exit 130 and one line naming both stores, and that the same command
    continues; the stores it names are whole."""
    import signal
    import subprocess as sp

    from hairdiff.cache import FeatureStore
    from tests.fixtures.cli import cli_env, popen_pipeline

    _figaro(setup)
    args = reproduce(setup, "--iters", "100000")
    p = popen_pipeline(*args, env=cli_env(), stderr=sp.PIPE, stdout=sp.PIPE, text=True)
    seen = []
    try:
        for line in p.stderr:  # the test store is extracted: training starts next
            seen.append(line)
            if line.startswith("test store:"):
                break
        else:
            pytest.fail("".join(seen))
        import time

        log = setup.tmp / "r" / "run" / "log.jsonl"  # into the training loop: its first rows are logged
        t0 = time.monotonic()
        while not (log.exists() and log.read_text().strip()) and p.poll() is None and time.monotonic() - t0 < 120:
            time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        _, rest = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    stores = {ln.split(": ")[0].split()[0]: ln.rsplit(": ", 1)[1].strip() for ln in seen if " store: computed" in ln}
    last = rest.strip().splitlines()[-1]
    assert p.returncode == 130, (p.returncode, rest[-2000:])
    assert last.startswith(f"error: interrupted: kept the train store {stores['train']}, the test store "
                           f"{stores['test']}, "), last
    assert "run the same command again to continue" in last and "Traceback" not in rest, rest[-2000:]
    assert all(FeatureStore.open(u).done_mask().all() for u in stores.values())


def test_11_a_reproduce_stopped_by_a_bad_image_reruns_once_it_is_fixed(setup):
    """The training data binds OUT when training starts, not before: a first run stopped by a damaged image is
    not refused as "other data" once the image is fixed."""
    _figaro(setup)
    args = reproduce(setup, "--ids-train", _ids(setup, "tr.txt", "Frame00001", "Frame00002"),
                     "--ids-test", _ids(setup, "te.txt", "Frame00004"))
    image = setup.tmp / "fig" / "Original" / "Training" / "Frame00002-org.jpg"
    good = image.read_bytes()
    image.write_bytes(good[:40])  # truncated
    code, _, err = invoke(*args)
    assert code == 1 and "Frame00002-org.jpg" in err.strip().splitlines()[-1], err
    image.write_bytes(good)
    code, _, err = invoke(*args)
    assert code == 0, err
