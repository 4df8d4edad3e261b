"""Overlay PNGs carry their colour key: the picture on top, a swatch of every colour of the key under it."""
from __future__ import annotations

import numpy as np
import pytest

from hairdiff.evaluate.overlay import (EVAL_KEY, FN, FP, IGNORED, PREDICT_KEY, TP, key_text, mask_overlay, overlay,
                                       with_key)


def swatch_colours(strip: np.ndarray) -> set[tuple[int, int, int]]:
    return {tuple(int(v) for v in px) for px in strip.reshape(-1, 3)}


@pytest.mark.parametrize("h,w", [(24, 32), (300, 400), (40, 1200)])
def test_the_key_sits_under_the_picture_at_any_size(h, w):
    rng = np.random.default_rng(0)
    gt = (rng.random((h, w)) < 0.4).astype(np.uint8)
    gt[:2] = 255
    pred = np.where(rng.random((h, w)) < 0.2, 1 - gt, gt).astype(np.uint8)
    picture = overlay(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), pred, gt)
    keyed = with_key(picture)
    assert keyed.shape[0] > h and keyed.shape[1] >= w
    assert np.array_equal(keyed[:h, :w], picture)  # the picture itself is untouched, top-left
    strip = keyed[h:]
    assert {TP, FP, FN, IGNORED} <= swatch_colours(strip)  # one solid swatch per entry
    assert (strip < 100).all(axis=2).any()  # and dark text beside them


def test_every_colour_of_the_picture_has_its_entry():
    gt = np.array([[1, 1, 0, 0, 255]], np.uint8)
    pred = np.array([[1, 0, 1, 0, 1]], np.uint8)
    px = overlay(None, pred, gt, alpha=1.0)[0]
    assert [tuple(int(v) for v in p) for p in px[[0, 1, 2, 4]]] == [TP, FN, FP, IGNORED]
    assert key_text() == ("green = hair found, red = hair predicted where there is none, blue = hair missed, "
                          "grey = ignore (not scored)")
    assert [c for _, c, _ in EVAL_KEY] == [TP, FP, FN, IGNORED]


def test_predict_overlay_has_its_own_key():
    img = np.full((50, 60, 3), 200, np.uint8)
    pred = np.zeros((50, 60), np.uint8)
    pred[:10] = 1
    keyed = mask_overlay(img, pred)
    assert keyed.shape[0] > 50 and keyed[20, 0].tolist() == [200, 200, 200]
    assert keyed[0, 0].tolist() == [100, 200, 100]  # half green over the photo
    assert PREDICT_KEY[0][1] in swatch_colours(keyed[50:]) and FP not in swatch_colours(keyed[50:])
