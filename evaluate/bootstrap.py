"""95% intervals for every metric of an evaluation: a bootstrap over its test images.

The test images are the unit of sampling: a resample draws N of the N images with replacement, and
- a pooled metric is computed on the sum of the drawn images' confusion matrices (and boundary counts), as the
  split's own value is computed on the sum of all of them (evaluate/metrics.py, boundary.py);
- a per-image mean is the mean of the drawn images' own values (an image whose value is undefined is left
  out, as in the split's mean).
The interval is the 2.5th and 97.5th percentile of the resampled values (the percentile bootstrap, Efron &
Tibshirani 1993, ch. 13). `paired_intervals` draws the SAME images for two evaluations of one test set and
takes each metric's difference per resample: the interval of A - B, which is what tells two heads apart
(unpaired intervals that overlap can still hide a clear paired difference).

Seeded (numpy's PCG64 from `seed`) and deterministic: the same inputs and seed give the same intervals.
Vectorised over the images' matrices: a block of resamples is a counts matrix C (resamples x N, how often
each image is drawn), and every resampled sum is one matrix product C @ per-image values (bench/bootstrap_speed.py
times it). tests/evaluate/test_bootstrap.py checks it against scipy.stats.bootstrap.
"""
from __future__ import annotations

import numpy as np

from hairdiff.evaluate.boundary import boundary_f_array
from hairdiff.evaluate.metrics import PER_IMAGE_KEYS, metric_arrays

RESAMPLES = 10_000
LEVEL = 0.95
SEED = 0
BLOCK = 1000  # resamples per counts matrix: memory stays ~(BLOCK x N) numbers whatever RESAMPLES is
METHOD = "percentile bootstrap over the test images (pooled: their confusion matrices re-summed; per image: the mean)"


class ImageScores:
    """What the bootstrap needs of one evaluation, per image: confusion matrices (N, K, K) and, when there, the
    boundary counts (N, 4) of evaluate.boundary.boundary_counts."""

    def __init__(self, confusion, boundary=None):
        self.confusion = np.asarray(confusion, dtype=np.float64)
        if self.confusion.ndim != 3 or self.confusion.shape[1] != self.confusion.shape[2]:
            raise ValueError(f"confusion matrices must be (N, K, K), got {self.confusion.shape}")
        self.n, self.k = self.confusion.shape[:2]
        self.boundary = None if boundary is None else np.asarray(boundary, dtype=np.float64).reshape(self.n, 4)
        per = metric_arrays(self.confusion)  # each image's own values, as per_image.json holds them
        values = np.stack([per[k] for k in PER_IMAGE_KEYS], 1)  # (N, M)
        self.defined = np.isfinite(values).astype(np.float64)
        self.values = np.where(self.defined > 0, values, 0.0)

    def statistics(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """counts (R, N) -> {"pooled.<metric>" | "per_image_mean.<metric>": (R,)} for the R resamples."""
        conf = (counts @ self.confusion.reshape(self.n, -1)).reshape(-1, self.k, self.k)
        out = {f"pooled.{k}": v for k, v in metric_arrays(conf).items()}
        if self.boundary is not None:
            out["pooled.boundary_f"] = boundary_f_array(counts @ self.boundary)
        with np.errstate(divide="ignore", invalid="ignore"):
            n = counts @ self.defined
            means = np.where(n > 0, (counts @ self.values) / np.maximum(n, 1), np.nan)
        out.update({f"per_image_mean.{k}": means[:, j] for j, k in enumerate(PER_IMAGE_KEYS)})
        return out


def resample_counts(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    """(resamples, n) float64: how often each of n images is drawn in each resample of n draws."""
    dtype = np.int32 if resamples * n < 2**31 else np.int64  # int32 draws: twice as fast to make and count
    draws = rng.integers(0, n, size=(resamples, n), dtype=dtype)
    draws += (np.arange(resamples, dtype=dtype) * n)[:, None]  # each resample's draws in its own row
    return np.bincount(draws.ravel(), minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def _resampled(samples: list[ImageScores], resamples: int, seed: int) -> list[dict[str, np.ndarray]]:
    """The statistics of every resample for each of `samples` (one draw of images shared by all of them)."""
    n = samples[0].n
    rng = np.random.default_rng(seed)
    blocks: list[list[dict]] = [[] for _ in samples]
    for start in range(0, resamples, BLOCK):
        counts = resample_counts(rng, n, min(BLOCK, resamples - start))
        for s, out in zip(samples, blocks):
            out.append(s.statistics(counts))
    return [{k: np.concatenate([b[k] for b in out]) for k in out[0]} for out in blocks]


def _interval(values: np.ndarray, level: float) -> list[float] | None:
    values = values[np.isfinite(values)]
    if not values.size:
        return None
    tail = 100 * (1 - level) / 2
    return [float(v) for v in np.percentile(values, [tail, 100 - tail])]


def _nested(flat: dict[str, list | None]) -> dict:
    out: dict = {}
    for key, v in flat.items():
        reading, metric = key.split(".", 1)
        out.setdefault(reading, {})[metric] = v
    return out


def _record(n: int, resamples: int, seed: int, level: float) -> dict:
    return {"level": level, "method": METHOD, "resamples": resamples, "seed": seed, "images": n}


def intervals(scores: ImageScores, *, resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL) -> dict:
    """{level, method, resamples, seed, images, pooled: {metric: [lo, hi]}, per_image_mean: {metric: [lo, hi]}};
    None for a metric whose every resample is undefined."""
    if scores.n == 0:
        raise ValueError("no images to resample")
    (stats,) = _resampled([scores], resamples, seed)
    return {**_record(scores.n, resamples, seed, level), **_nested({k: _interval(v, level) for k, v in stats.items()})}


def point(scores: ImageScores) -> dict[str, float]:
    """The statistics of the images themselves (every image once): the values the intervals are around."""
    return {k: float(v[0]) for k, v in scores.statistics(np.ones((1, scores.n))).items()}


def paired_intervals(a: ImageScores, b: ImageScores, *, resamples: int = RESAMPLES, seed: int = SEED,
                     level: float = LEVEL) -> dict:
    """The difference A - B of every metric on the same images: {..., pooled: {metric: {"difference": d,
    "interval": [lo, hi]}}, per_image_mean: {...}}, each resample drawing the same images for A and B. The
    images must be the same, in the same order (the caller checks: evaluate/compare.py)."""
    if (a.n, a.k) != (b.n, b.k):
        raise ValueError(f"paired bootstrap needs the same images: {a.n} and {b.n} images")
    sa, sb = _resampled([a, b], resamples, seed)
    pa, pb = point(a), point(b)
    flat = {k: {"difference": pa[k] - pb[k], "interval": _interval(sa[k] - sb[k], level)} for k in sa if k in sb}
    return {**_record(a.n, resamples, seed, level), **_nested(flat)}
