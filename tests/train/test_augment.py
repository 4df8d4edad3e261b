"""Random crops of cached maps (`--crop`): on the coarsest stride's grid, features and labels cut alike."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hairdiff.cache.levels import LevelSpec
from hairdiff.core.errors import UsageError
from hairdiff.train.augment import check_crop, crop_batch, crop_corner
from hairdiff.train.loop import train
from tests.fixtures.stores import log_rows, make_train_store, toy_train_config

R = 64
LEVELS = [LevelSpec("s32", 32, 3, 2, 2), LevelSpec("s16", 16, 3, 4, 4), LevelSpec("s8", 8, 3, 8, 8),
          LevelSpec("s4", 4, 3, 16, 16)]


def positional_batch(n: int, valid_rows: int = R, seed: int = 0, levels=LEVELS) -> dict:
    """Labels of random 0/1 blobs (rows from valid_rows on ignored); each level's channels hold its cells'
    top pixel row, left pixel column and the label's hair fraction over the cell."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, R // 4, R // 4)) < 0.4).repeat(4, 1).repeat(4, 2).astype(np.uint8)
    labels[:, valid_rows:] = 255
    feats = {}
    for lv in levels:
        s = lv.stride
        rows = np.arange(R // s)[:, None] * s
        cols = np.arange(R // s)[None, :] * s
        hair = (labels == 1).reshape(n, R // s, s, R // s, s).mean(axis=(2, 4))
        f = np.stack([np.broadcast_to(rows, hair.shape), np.broadcast_to(cols, hair.shape), hair], axis=1)
        feats[lv.name] = torch.from_numpy(f.astype(np.float32)).half()
    return {"features": feats, "labels": torch.from_numpy(labels), "global_start": 0}


def test_crops_cut_every_level_and_the_label_at_the_same_pixels():
    batch = positional_batch(6)
    size = 32
    step = check_crop(size, LEVELS, R)
    assert step == 32
    out = crop_batch(batch, LEVELS, size, step, seed=1, iteration=3)
    assert out["labels"].shape == (6, size, size)
    corners = out["crops"]
    assert len(set(corners)) > 1  # random placement, not always the same corner
    for j, (y0, x0) in enumerate(corners):
        assert y0 % 32 == 0 and x0 % 32 == 0 and 0 <= y0 <= R - size and 0 <= x0 <= R - size
        lab = out["labels"][j].numpy()
        torch.testing.assert_close(out["labels"][j], batch["labels"][j, y0:y0 + size, x0:x0 + size])
        for lv in LEVELS:
            f = out["features"][lv.name][j].float().numpy()
            s = lv.stride
            assert f.shape == (3, size // s, size // s)
            # The cut starts at the crop's corner on every level ...
            assert f[0, 0, 0] == y0 and f[1, 0, 0] == x0
            # ... and every cell still describes the label pixels it sits on in the cropped label.
            hair = (lab == 1).reshape(size // s, s, size // s, s).mean(axis=(1, 3))
            np.testing.assert_allclose(f[2], hair, atol=1e-3)
    assert batch["labels"].shape == (6, R, R)  # the input batch is left as it was


def test_crop_draws_are_a_pure_function_of_seed_iteration_and_sample():
    lab = np.zeros((R, R), np.uint8)
    a = [crop_corner(lab, 16, 8, seed=0, iteration=it, index=i) for it in range(4) for i in range(4)]
    b = [crop_corner(lab, 16, 8, seed=0, iteration=it, index=i) for it in range(4) for i in range(4)]
    c = [crop_corner(lab, 16, 8, seed=1, iteration=it, index=i) for it in range(4) for i in range(4)]
    assert a == b and a != c and len(set(a)) > 4


def test_crops_stay_inside_the_image_when_it_is_large_enough():
    # Letterbox padding (255) below row 40: a 32-crop must start at row <= 8 (40 - 32 on an 8-grid).
    fine = LEVELS[2:]  # coarsest stride 8
    batch = positional_batch(40, valid_rows=40, seed=2, levels=fine)
    out = crop_batch(batch, fine, 32, check_crop(32, fine, R), seed=0, iteration=0)
    ys = {y0 for y0, _ in out["crops"]}
    assert ys <= {0, 8} and ys == {0, 8}
    # Shorter than the crop: the crop starts at the top.
    short = positional_batch(8, valid_rows=20, seed=3, levels=fine)
    assert {y0 for y0, _ in crop_batch(short, fine, 32, 8, seed=0, iteration=0)["crops"]} == {0}


def test_crop_size_must_fit_the_coarsest_stride_and_the_store():
    with pytest.raises(UsageError, match="--crop 48: use a multiple of 32"):
        check_crop(48, LEVELS, R)
    with pytest.raises(UsageError, match="--crop 96"):
        check_crop(96, LEVELS, R)


def test_training_on_crops(tmp_path):
    store = make_train_store(tmp_path, n=4)  # R = 32, coarsest stride 16
    with pytest.raises(UsageError, match="multiple of 16"):
        train(toy_train_config(store, tmp_path / "bad", iters=1, batch_size=2, crop=24), device="cpu")
    assert not (tmp_path / "bad").exists()  # refused before the run folder is made
    run = tmp_path / "run"
    summary = train(toy_train_config(store, run, iters=3, batch_size=2, crop=16), device="cpu")
    assert summary["finished"] and len(log_rows(run)) == 3
    assert (run / "config.json").read_text().count('"crop": 16') == 1
