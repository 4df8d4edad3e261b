"""The bootstrap's intervals: scipy's on a per-image mean, the pooled metrics re-summed exactly, seeded, paired."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from hairdiff.evaluate.bootstrap import ImageScores, intervals, paired_intervals, point, resample_counts
from hairdiff.evaluate.boundary import boundary_f
from hairdiff.evaluate.metrics import PER_IMAGE_KEYS, TABLE_KEYS, scores


def split(n: int = 120, seed: int = 0, skill: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Per-image confusion matrices and boundary counts of a plausible head: images of varied size and hair
    share, some without hair, predictions right on a share `skill` (varying by image) of each class; every
    13th image has no hair in truth or prediction (its hair IoU is undefined and left out of the mean)."""
    rng = np.random.default_rng(seed)
    conf, bnd = np.zeros((n, 2, 2), np.int64), np.zeros((n, 4), np.int64)
    for i in range(n):
        pixels = int(rng.integers(2_000, 60_000))
        hair = 0 if i % 9 == 0 else int(pixels * rng.uniform(0.05, 0.6))
        right = np.clip(rng.normal(skill, 0.1, 2), 0.2, 1.0)
        conf[i] = [[round((pixels - hair) * right[0]), 0], [0, round(hair * right[1])]]
        conf[i, 0, 1] = pixels - hair - conf[i, 0, 0]
        conf[i, 1, 0] = hair - conf[i, 1, 1]
        if i % 13 == 0:
            conf[i] = [[pixels, 0], [0, 0]]
        true_b, pred_b = int(rng.integers(0, 400)), int(rng.integers(0, 400))
        bnd[i] = [int(pred_b * rng.uniform(0.3, 1)), pred_b, int(true_b * rng.uniform(0.3, 1)), true_b]
    return conf, bnd


def test_per_image_mean_interval_is_scipys():
    conf, bnd = split()
    s = ImageScores(conf, bnd)
    per_image = np.array([scores(c)["mIoU"] for c in conf])
    ours = intervals(s, seed=3)["per_image_mean"]["mIoU"]
    ref = stats.bootstrap((per_image,), np.mean, n_resamples=10_000, method="percentile", confidence_level=0.95,
                          random_state=np.random.default_rng(7)).confidence_interval
    width = ref.high - ref.low
    assert width > 1.0  # a real spread, or the comparison would be empty
    # Two independent sets of 10,000 resamples: the endpoints agree to Monte Carlo error (~1% of the width).
    assert abs(ours[0] - ref.low) < 0.04 * width and abs(ours[1] - ref.high) < 0.04 * width, (ours, ref)
    assert per_image.mean() == pytest.approx(point(s)["per_image_mean.mIoU"])


def test_resampled_pooled_metrics_are_the_metrics_of_the_resummed_images():
    """Each resample's pooled values are evaluate.metrics.scores / boundary_f of the drawn images' summed
    counts, and its per-image means the mean of the drawn images' own values (an explicit loop, 30 draws)."""
    conf, bnd = split(40, seed=1)
    s = ImageScores(conf, bnd)
    counts = resample_counts(np.random.default_rng(0), 40, 30)
    assert (counts.sum(1) == 40).all() and counts.max() > 1 and (counts == 0).any()
    assert np.isnan(scores(conf[0])["hair_iou"])  # the undefined values are there to be left out
    got = s.statistics(counts)
    per_image = [scores(c) for c in conf]
    for r, row in enumerate(counts.astype(int)):
        drawn = np.repeat(np.arange(40), row)
        want = scores(conf[drawn].sum(0))
        for k in TABLE_KEYS[:-1]:
            assert got[f"pooled.{k}"][r] == pytest.approx(want[k], abs=1e-9), k
        assert got["pooled.boundary_f"][r] == pytest.approx(boundary_f(bnd[drawn].sum(0)), abs=1e-9)
        for k in PER_IMAGE_KEYS:
            values = np.array([per_image[i][k] for i in drawn], dtype=float)
            assert got[f"per_image_mean.{k}"][r] == pytest.approx(np.nanmean(values), abs=1e-9), k


def test_every_metric_has_an_interval_around_its_value_seeded_and_deterministic():
    conf, bnd = split(80, seed=2)
    s = ImageScores(conf, bnd)
    a, b, other = intervals(s, resamples=2000), intervals(s, resamples=2000), intervals(s, resamples=2000, seed=1)
    assert a == b and a != other
    assert a["images"] == 80 and a["resamples"] == 2000 and a["level"] == 0.95
    assert set(TABLE_KEYS) <= set(a["pooled"]) and set(a["per_image_mean"]) == set(PER_IMAGE_KEYS)
    values = point(s)
    for reading in ("pooled", "per_image_mean"):
        for k, (lo, hi) in a[reading].items():
            assert lo < hi and lo <= values[f"{reading}.{k}"] <= hi, (reading, k)
    # Images that all score alike leave nothing to resample: a zero-width interval.
    same = intervals(ImageScores(np.repeat(conf[:1], 30, 0)), resamples=200)
    assert same["pooled"]["mIoU"][0] == same["pooled"]["mIoU"][1]


def test_paired_differences_see_what_overlapping_intervals_hide():
    """B is A slightly better on every image: the unpaired intervals overlap, the paired one excludes 0."""
    conf, bnd = split(100, seed=4)
    better = conf.copy()
    moved = (0.04 * better[:, 1, 0]).astype(np.int64)  # 4% of the missed hair found
    better[:, 1, 0] -= moved
    better[:, 1, 1] += moved
    a, b = ImageScores(better, bnd), ImageScores(conf, bnd)
    ia, ib = intervals(a, resamples=2000)["pooled"]["mIoU"], intervals(b, resamples=2000)["pooled"]["mIoU"]
    assert ia[0] < ib[1]  # overlapping
    d = paired_intervals(a, b, resamples=2000)["pooled"]["mIoU"]
    assert d["difference"] == pytest.approx(point(a)["pooled.mIoU"] - point(b)["pooled.mIoU"])
    assert 0 < d["interval"][0] <= d["difference"] <= d["interval"][1]
    same = paired_intervals(a, a, resamples=500)["per_image_mean"]["f1"]
    assert same == {"difference": 0.0, "interval": [0.0, 0.0]}
    with pytest.raises(ValueError, match="same images"):
        paired_intervals(a, ImageScores(conf[:50]))
