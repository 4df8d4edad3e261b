"""The Python API: `HairSegmenter` gives `pipeline predict`'s masks; model folders (`pipeline export`,
`save_pretrained`) load in a fresh process without network or run folder; every bad input is one error line."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hairdiff import HairSegmenter, Segmentation
from hairdiff.core.errors import BadSampleError, ModelFolderError, NonFiniteHeadError, UsageError
from hairdiff.evaluate.config import PredictConfig
from hairdiff.evaluate.predict import predict_images
from tests.fixtures.cli import invoke
from tests.fixtures.images import photo, photo_files
from tests.fixtures.stores import TINY_HEAD, contrasting_run

SIZES = [(50, 37), (64, 90), (33, 33)]
# No network: a Hub endpoint that refuses every connection (a closed port on this machine).
NO_NETWORK = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_DISABLE_TELEMETRY": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, extractor):
    """A run folder holding a (random-weight) head on the tiny backbone's features, as `pipeline train` writes it,
    that marks part of each test image as hair."""
    return contrasting_run(tmp_path_factory.mktemp("tiny"), extractor, photo(*SIZES[0], 0))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return photo_files(tmp_path_factory.mktemp("images"), SIZES)


@pytest.fixture(scope="module")
def segmenter(tiny_run):
    return HairSegmenter.from_pretrained(tiny_run, device="cpu")


def one_line(e: BaseException) -> str:
    text = str(e)
    assert "\n" not in text and text, text
    return text


def test_the_api_gives_the_masks_pipeline_predict_writes(tmp_path, tiny_run, images, segmenter):
    got = segmenter([str(p) for p in images])
    rows = predict_images(PredictConfig(images=[str(p) for p in images], run=str(tiny_run), out=str(tmp_path / "p"),
                                        device="cpu"))
    for path, seg, row in zip(images, got, rows):
        h, w = Image.open(path).size[::-1]
        assert isinstance(seg, Segmentation) and seg.image == str(path)
        assert seg.mask.dtype == np.uint8 and seg.mask.shape == (h, w) and set(np.unique(seg.mask)) <= {0, 1}
        assert seg.probability.dtype == np.float32 and seg.probability.shape == (h, w)
        assert ((seg.probability > 0.5) == (seg.mask == 1)).mean() > 0.999  # the mask is where hair outweighs
        assert np.array_equal(seg.mask * 255, np.asarray(Image.open(row["mask"])))  # predict's file, exactly
    assert 0 < sum(s.mask.sum() for s in got) < sum(s.mask.size for s in got)  # neither empty nor all hair

    # One image in any form gives one result, the same mask.
    arr = photo(*SIZES[0], 0)
    rgba = np.dstack([arr, np.full(arr.shape[:2], 7, np.uint8)])  # alpha dropped, colours kept
    for one in (images[0], Image.open(images[0]), arr, rgba):
        assert np.array_equal(segmenter(one).mask, got[0].mask)
    # Batches give the scores of one image at a time, up to float rounding (which flips pixels of this head: it
    # sits at the decision on purpose, so the masks are compared at equal batch sizes, as the defaults are).
    together = segmenter([str(p) for p in images], batch_size=3)
    assert all(np.abs(a.probability - b.probability).max() < 1e-3 for a, b in zip(together, got))


def test_bad_images_are_one_error_each(tmp_path, tiny_run, segmenter):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(BadSampleError) as e:
        segmenter([photo(20, 20, 0), broken])
    line = one_line(e.value)
    assert line.startswith(f"{broken}: cannot decode the image")
    code, _, err = invoke("predict", broken, "--run", tiny_run, "--out", tmp_path / "p", "--device", "cpu")
    assert code == 1 and err.strip().splitlines()[-1].startswith(f"error: {line}; stopped there"), err
    for bad, says in [(np.zeros((4, 4, 3), np.float32), "a float32 array, not uint8"),
                      (np.zeros((4, 4, 2), np.uint8), "is not an image's"),
                      (np.zeros((0, 5, 3), np.uint8), "no pixel")]:
        with pytest.raises(BadSampleError, match=says) as e:
            segmenter(bad)
        assert one_line(e.value).startswith("image 0 (a numpy.ndarray)")
    with pytest.raises(UsageError, match="not an image; pass a path, a PIL image or a numpy array"):
        segmenter(42)


def _exported(tmp_path: Path, run: Path) -> Path:
    code, out, err = invoke("export", run, "--out", tmp_path / "m")
    assert code == 0, err
    assert out.strip().splitlines()[-1] == str(tmp_path / "m")
    return tmp_path / "m"


# A new user's process: no network (the Hub endpoint refuses connections), no run folder. It loads the model
# folder and segments, then meets the Hub: a model id it cannot fetch, a push through huggingface_hub's own path,
# and `pipeline export --push-to` (the folder written, the push refused).
FRESH = """
import contextlib, io, json, sys
import numpy as np
from hairdiff import HairSegmenter
from hairdiff.cli import main
from hairdiff.core.errors import HairdiffError
folder, images, masks_file, run, out2 = sys.argv[1:6]
seg = HairSegmenter.from_pretrained(folder, device="cpu")
results = seg(json.loads(images))
np.savez(masks_file, *[r.mask for r in results])
got = {"loaded": [seg.source["source"], seg.source["trained_as"]["source"], len(results)]}
def attempt(name, fn):
    try:
        fn()
        got[name] = "no error"
    except HairdiffError as e:
        got[name] = [type(e).__name__, str(e), e.exit_code]
attempt("hub id", lambda: HairSegmenter.from_pretrained("someone/hair-model"))
attempt("push", lambda: seg.push_to_hub("someone/hair-model"))
err = io.StringIO()
with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
    try:
        main(["export", run, "--out", out2, "--push-to", "someone/hair-model"])
    except SystemExit as e:
        got["export --push-to"] = [e.code, err.getvalue()]
print(json.dumps(got))
"""


def test_an_exported_folder_works_in_a_fresh_process_without_network_or_run(tmp_path, tiny_run, images, segmenter):
    folder = _exported(tmp_path, tiny_run)
    assert sorted(os.listdir(folder)) == ["README.md", "config.json", "model.safetensors"]
    card = (folder / "README.md").read_text()
    body = card.split("\n---\n", 1)[1].lstrip()
    assert body.startswith("**The numbers on this card mean nothing: the backbone is `tiny`")  # the first line
    want = [s.mask for s in segmenter([str(p) for p in images])]

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)  # for the export below; the model folder is loaded with no run at all
    # As many threads as here: the head sits at its decision (contrasting_run), so only the same computation gives
    # the same masks, and any other weights or settings would flip pixels.
    env = {**os.environ, **NO_NETWORK, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    args = [str(folder), json.dumps([str(p) for p in images]), str(tmp_path / "masks.npz"), str(run),
            str(tmp_path / "m2")]
    hidden = tmp_path / "hidden"
    shutil.move(tiny_run, hidden)
    try:
        p = subprocess.run([sys.executable, "-c", FRESH, *args], capture_output=True, text=True, timeout=300,
                           cwd=tmp_path, env=env)
    finally:
        shutil.move(hidden, tiny_run)
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["loaded"] == ["model", "final", 3]
    fresh = np.load(tmp_path / "masks.npz")
    assert len(fresh.files) == len(want) and all(np.array_equal(fresh[f"arr_{k}"], m) for k, m in enumerate(want))

    kind, line, code = got["hub id"]
    assert kind == "HubError" and "\n" not in line and code == 2
    assert line.startswith("someone/hair-model: cannot get it from the Hugging Face Hub (http://127.0.0.1:9")
    kind, line, code = got["push"]  # huggingface_hub's own push path, failing on the refused connection
    assert kind == "HubPushError" and "\n" not in line and code == 1
    assert line.startswith("cannot push to the Hugging Face Hub repository someone/hair-model (http://127.0.0.1:9")
    code, err = got["export --push-to"]
    assert code == 1 and err.strip().splitlines()[-1] == f"error: {line}", err
    assert (tmp_path / "m2" / "model.safetensors").is_file()  # written before the push, kept

    # save_pretrained of the loaded folder writes the same record and card again
    again = HairSegmenter.from_pretrained(folder, device="cpu", backbone=False)
    again.save_pretrained(tmp_path / "again")
    assert (json.loads((tmp_path / "again" / "config.json").read_text())
            == json.loads((folder / "config.json").read_text()))
    assert (tmp_path / "again" / "README.md").read_text() == card.replace(str(folder), str(tmp_path / "again"))


def test_a_folder_that_is_not_a_model_or_whose_weights_are_bad_is_one_error(tmp_path, tiny_run):
    import dataclasses

    from safetensors.torch import save_model

    from hairdiff.cache.levels import LevelSpec
    from hairdiff.model.mask2former.head import Mask2FormerHead

    folder = _exported(tmp_path, tiny_run)
    cases = []
    plain = tmp_path / "plain"
    plain.mkdir()
    cases.append((plain, "is not a hairdiff model folder (no config.json) nor a run folder"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    cases.append((other, "config.json is not a hairdiff model's config"))
    cases.append((tmp_path / "nowhere" / "m", "no such folder"))
    damaged = tmp_path / "damaged"
    shutil.copytree(folder, damaged)
    data = (damaged / "model.safetensors").read_bytes()
    (damaged / "model.safetensors").write_bytes(data[: len(data) // 2])
    cases.append((damaged, "model.safetensors is damaged"))
    misfit = tmp_path / "misfit"
    shutil.copytree(folder, misfit)
    levels = [LevelSpec(**lv) for lv in json.loads((folder / "config.json").read_text())["meta"]["levels"]]
    save_model(Mask2FormerHead(levels, dataclasses.replace(TINY_HEAD, hidden_dim=16, mask_dim=16)),
               str(misfit / "model.safetensors"))
    cases.append((misfit, "model.safetensors does not fit the head described in"))
    for path, says in cases:
        with pytest.raises(ModelFolderError) as e:
            HairSegmenter.from_pretrained(path, device="cpu")
        line = one_line(e.value)
        assert says in line, line
        # The command line says the same line (serve loads the model first: no page is started).
        code, _, err = invoke("serve", path, "--device", "cpu", "--port", "0")
        assert code == 2 and err.strip().splitlines()[-1] == f"error: {line}", err
    # a folder whose head diverged says how to get a usable folder, not how to retrain a run it does not have
    from safetensors.torch import load_file, save_file

    diverged = tmp_path / "diverged"
    shutil.copytree(folder, diverged)
    weights = load_file(str(diverged / "model.safetensors"))
    next(iter(weights.values())).view(-1)[0] = float("nan")
    save_file(weights, str(diverged / "model.safetensors"))
    with pytest.raises(NonFiniteHeadError, match=r"holds 1 non-finite values .* Export the folder again"):
        HairSegmenter.from_pretrained(diverged, device="cpu")
