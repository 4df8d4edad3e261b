"""`pipeline predict`: the tiny SD backbone + a saved head on new image files, same chain as evaluation."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hairdiff.cache import FeatureStore, fingerprint
from hairdiff.cache.geometry import letterbox_image, letterbox_label, preprocessing_record
from hairdiff.core.errors import RunMismatchError
from hairdiff.evaluate.config import PredictConfig
from hairdiff.evaluate.predict import predict_images
from hairdiff.evaluate.run import predict_batch, to_annotation
from hairdiff.model.trained import load_head
from tests.fixtures.cli import invoke
from tests.fixtures.images import R, photo
from tests.fixtures.stores import make_run as make_run_with


def make_run(tmp: Path, fx, edit=None) -> Path:
    return make_run_with(tmp, levels=fx.levels, inputs=fx.fingerprint_inputs, edit=edit, seed=1)


def predict(run, images, out, **kw):
    return predict_images(PredictConfig(images=images, run=run, out=out, device="cpu", **kw))


@pytest.fixture(params=["fp16", "int8"])
def stored_as(request, extractor):
    """The extractor recording one stored precision (the run's), restored afterwards."""
    before, extractor.precision = extractor.precision, request.param
    yield request.param
    extractor.precision = before


def test_predict_writes_masks_at_image_size_matching_the_eval_path(tmp_path, extractor, stored_as):
    from hairdiff.extract.loading import to_model_input

    run = make_run(tmp_path, extractor)
    paths = []
    for k, (h, w) in enumerate([(50, 37), (64, 90)]):
        p = tmp_path / f"img{k}.png"
        Image.fromarray(photo(h, w, k)).save(p)
        paths.append(p)
    out = tmp_path / "pred"
    rows = predict(run, paths, out)
    assert [r["image"] for r in rows] == [str(p) for p in paths]
    record = json.loads((out / "predictions.json").read_text())
    assert record["predictions"] == rows
    assert record["head"]["source"] == "final" and record["head"]["weights"] == str(run / "head.safetensors")

    # The same images through the eval path: features into a real store (of the run's precision), head,
    # unletterbox: predict must see the values the store gives back, int8 quantisation included.
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    fp = fingerprint({"t": "predict-vs-eval"})
    store = FeatureStore.create_or_open(
        str(tmp_path / "s.zarr"), fingerprint=fp, fingerprint_inputs={}, dataset="folder", split="x",
        root=str(tmp_path), ids=["a", "b"], levels=extractor.levels, resolution=R,
        preprocessing=preprocessing_record(R), shard_size=2, precision=stored_as)
    feats = extractor(to_model_input([letterbox_image(i, R) for i in images], torch.device("cpu"), torch.float32))
    labels = [np.zeros(i.shape[:2], np.uint8) for i in images]
    store.write_samples([0, 1], {k: v.numpy() for k, v in feats.items()},
                        np.stack([letterbox_label(lab, R) for lab in labels]), labels,
                        np.array([i.shape[:2] for i in images]))
    head, _ = load_head(run)
    batch = store.read_batch([0, 1])
    probs = predict_batch(head, batch["features"], "cpu", R)
    from hairdiff.cache.geometry import unletterbox
    from hairdiff.evaluate.segmenter import segment

    for j, p in enumerate(segment(extractor, head, images, R)):  # the probabilities, not only their argmax
        want = unletterbox(probs[j:j + 1], images[j].shape[:2], images[j].shape[:2])[0]
        assert torch.allclose(p, want, atol=1e-5), (stored_as, float((p - want).abs().max()))
    for j, (img, row) in enumerate(zip(images, rows)):
        mask = np.asarray(Image.open(row["mask"]))
        assert mask.shape == img.shape[:2] and set(np.unique(mask)) <= {0, 255}
        assert np.array_equal(mask // 255, to_annotation(probs[j], img.shape[:2], img.shape[:2]))
        assert row["hair_fraction"] == pytest.approx((mask == 255).mean())
        shown = np.asarray(Image.open(row["overlay"]))
        assert shown.shape[0] > img.shape[0] and shown.shape[1] >= img.shape[1]  # the picture, its key under it


def test_predict_refuses_when_the_features_would_differ(tmp_path, extractor):
    def trained_on_sd13(meta):  # a run trained on SD v1-3 features, predicted with the tiny model
        fi = {**meta["fingerprint_inputs"], "model": {"kind": "hub", "name": "CompVis/stable-diffusion-v1-3",
                                                       "revision": "abc"}}
        meta["fingerprint_inputs"], meta["fingerprint"] = fi, fingerprint(fi)

    run = make_run(tmp_path, extractor, trained_on_sd13)
    img = tmp_path / "a.png"
    Image.fromarray(photo(30, 30, 0)).save(img)
    with pytest.raises(RunMismatchError, match="differs in: model"):
        predict(run, [img], tmp_path / "pred", model="tiny")
    assert not (tmp_path / "pred" / "predictions.json").exists()
    # a hand-edited run.json is refused before any model is loaded
    meta = json.loads((run / "run.json").read_text())
    meta["meta"]["fingerprint_inputs"]["prompt"] = "A photo of a cat."
    (run / "run.json").write_text(json.dumps(meta))
    with pytest.raises(RunMismatchError, match="edited"):
        predict(run, [img], tmp_path / "pred")


def one_error_line(err: str) -> str:
    """The error line; before it, at most the line saying which head predicts (once the run is read)."""
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("predicting with ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_predict_stops_at_an_unreadable_image_or_skips_it(tmp_path, extractor, figaro_root):
    run = make_run(tmp_path, extractor)
    real = sorted((figaro_root / "Original" / "Training").glob("*.jpg"))[:2]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    images = [real[0], broken, real[1]]
    out = tmp_path / "stop"
    code, _, err = invoke("predict", *images, "--run", run, "--out", out, "--device", "cpu")
    assert code == 1
    line = one_error_line(err)
    assert str(broken) in line and "cannot decode" in line and "--on-error skip" in line
    kept = json.loads((out / "predictions.json").read_text())["predictions"]
    assert [r["image"] for r in kept] == [str(real[0])]  # the image before the bad one is kept
    assert Image.open(kept[0]["mask"]).size == Image.open(real[0]).size

    out = tmp_path / "skip"
    code, stdout, err = invoke("predict", *images, "--run", run, "--out", out, "--device", "cpu",
                               "--on-error", "skip", "--batch-size", "2")
    assert code == 0, err
    assert stdout.strip().splitlines()[-1] == str(out / "predictions.json")
    assert f"skipped {broken}: cannot decode the image" in err and "skipped 1 of 3 image(s)" in err
    rows = json.loads((out / "predictions.json").read_text())["predictions"]
    assert [r["image"] for r in rows] == [str(p) for p in images]  # in the order given
    assert set(rows[1]) == {"image", "error"} and "cannot decode" in rows[1]["error"]
    for r in (rows[0], rows[2]):
        assert Image.open(r["mask"]).size == Image.open(r["image"]).size


def test_folders_expand_to_their_image_files_sorted(tmp_path, extractor):
    run = make_run(tmp_path, extractor)
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.png", "a.jpg", "c.WEBP", "sub/d.png"):
        Image.fromarray(photo(20, 24, len(name))).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    single = tmp_path / "z.bmp"
    Image.fromarray(photo(16, 16, 9)).save(single)
    rows = predict(run, [single, folder], tmp_path / "pred")
    assert [Path(r["image"]).name for r in rows] == ["z.bmp", "a.jpg", "b.png", "c.WEBP"]


def test_batches_give_the_masks_of_batch_size_1(tmp_path, extractor):
    from hairdiff.evaluate.segmenter import segment

    run = make_run(tmp_path, extractor)
    images = [photo(h, w, k) for k, (h, w) in enumerate([(50, 37), (64, 90), (30, 30), (70, 40)])]
    head, _ = load_head(run)
    together = segment(extractor, head, images, R)
    for img, prob in zip(images, together):
        alone = segment(extractor, head, [img], R)[0]
        assert prob.shape == alone.shape == (2, *img.shape[:2])
        torch.testing.assert_close(prob, alone, atol=1e-3, rtol=0)  # fp16 rounding of the features, no more
    paths = []
    for k, img in enumerate(images):
        paths.append(tmp_path / f"im{k}.png")
        Image.fromarray(img).save(paths[-1])
    one, three = predict(run, paths, tmp_path / "one"), predict(run, paths, tmp_path / "three", batch_size=3)
    for a, b in zip(one, three):
        ma, mb = np.asarray(Image.open(a["mask"])), np.asarray(Image.open(b["mask"]))
        assert ma.shape == mb.shape and (ma != mb).mean() <= 1e-3, (a["image"], (ma != mb).mean())


def test_every_path_is_checked_before_the_model_loads(tmp_path, extractor):
    def local_model(meta):  # loading this run's backbone would fail: --model is needed
        fi = {**meta["fingerprint_inputs"], "model": {"kind": "local", "name": "sd-somewhere"}}
        meta["fingerprint_inputs"], meta["fingerprint"] = fi, fingerprint(fi)

    run = make_run(tmp_path, extractor, local_model)
    good = tmp_path / "a.png"
    Image.fromarray(photo(16, 16, 0)).save(good)
    (tmp_path / "notes.txt").write_text("x")
    for bad, says in [(tmp_path / "notes.txt", "not an image file name (.jpg .jpeg .png .bmp .webp)"),
                      (tmp_path / "gone.png", "no such file or folder")]:
        code, _, err = invoke("predict", good, bad, "--run", run, "--out", tmp_path / "pred", "--device", "cpu")
        assert code == 2 and one_error_line(err).startswith(f"error: {bad}: {says}"), err
        assert not (tmp_path / "pred").exists()
    code, _, err = invoke("predict", good, "--run", run, "--out", tmp_path / "pred", "--device", "cpu")
    assert code == 2 and "--model" in one_error_line(err)  # the model is reached once the paths are fine
