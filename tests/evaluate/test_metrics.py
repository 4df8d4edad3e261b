"""evaluate.metrics and evaluate.boundary against brute-force references written from the equations."""
import math

import numpy as np
import pytest

from hairdiff.evaluate.boundary import boundary_counts, boundary_f, default_tolerance
from hairdiff.evaluate.metrics import confusion_matrix, miou_floor, per_image_means, scores
from hairdiff.evaluate.paper import one_reading_bound, paper_rows


# ------------------------------------------------------------------ brute-force references (pure python)
def ref_counts(pairs, k=2, ignore=255):
    """p[i][j]: pixels of true class i predicted as j, over all images, by looping over pixels."""
    p = [[0] * k for _ in range(k)]
    for pred, gt in pairs:
        for y in range(gt.shape[0]):
            for x in range(gt.shape[1]):
                g = int(gt[y, x])
                if g != ignore:
                    p[g][int(pred[y, x])] += 1
    return p


def ref_scores(p):
    """Equations 7-10 as documented in evaluate.metrics, with explicit sums: a class that occurs in truth or
    prediction counts, 0 for a zero denominator; a class absent from both is left out."""
    k = len(p)
    t = [sum(p[i][j] for j in range(k)) for i in range(k)]
    col = [sum(p[j][i] for j in range(k)) for i in range(k)]

    def mean(vals):
        vals = [v for v in vals if v is not None]
        return 100 * sum(vals) / len(vals) if vals else math.nan

    def ratio(i, a, b):
        if b:
            return a / b
        return 0.0 if t[i] or col[i] else None

    iou = [ratio(i, p[i][i], t[i] + col[i] - p[i][i]) for i in range(k)]
    acc = 100 * sum(p[i][i] for i in range(k)) / sum(t) if sum(t) else math.nan
    prec = [ratio(i, p[i][i], col[i]) for i in range(k)]
    f1 = [ratio(i, 2 * p[i][i], 2 * p[i][i] + sum(p[i][j] for j in range(k) if j != i)
                + sum(p[j][i] for j in range(k) if j != i)) for i in range(k)]
    mca = [ratio(i, p[i][i], t[i]) for i in range(k)]
    return {"mIoU": mean(iou), "accuracy": acc, "precision": mean(prec), "f1": mean(f1),
            "mean_class_accuracy": mean(mca), "hair_iou": 100 * iou[1] if iou[1] is not None else math.nan,
            "hair_f1": 100 * f1[1] if f1[1] is not None else math.nan}


def close(a, b):
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


def random_pair(rng, h, w, p_hair, p_ignore, p_flip, p_no_hair_head=0.0):
    gt = (rng.random((h, w)) < p_hair).astype(np.uint8)
    pred = np.where(rng.random((h, w)) < p_flip, 1 - gt, gt).astype(np.uint8)
    if rng.random() < p_no_hair_head:
        pred[:] = 0  # a head that never predicts hair
    gt[rng.random((h, w)) < p_ignore] = 255
    return pred, gt


# ---------------------------------------------------------------------------------------------- metrics
def test_scores_equal_brute_force_on_random_splits():
    rng = np.random.default_rng(0)
    for case in range(60):
        n = int(rng.integers(1, 4))
        pairs = [random_pair(rng, int(rng.integers(1, 12)), int(rng.integers(1, 12)), rng.choice([0, rng.random()]),
                             rng.choice([0.0, 0.1, 0.5]), rng.random(), 0.3) for _ in range(n)]
        conf = sum(confusion_matrix(pr, gt) for pr, gt in pairs)
        assert conf.dtype == np.int64 and conf.tolist() == ref_counts(pairs), case
        got, want = scores(conf), ref_scores(ref_counts(pairs))
        for key, v in want.items():
            assert close(got[key], v), (case, key, got[key], v)


def test_degenerate_splits_follow_the_documented_conventions():
    # Hair absent from truth and prediction: its ratios are NaN and the means use background only.
    gt = np.zeros((4, 4), np.uint8)
    s = scores(confusion_matrix(gt, gt))
    assert math.isnan(s["hair_iou"]) and s["mIoU"] == 100 and s["accuracy"] == 100 and s["f1"] == 100
    assert s["precision"] == 100 and s["mean_class_accuracy"] == 100
    # Hair predicted where there is none: hair IoU, precision and recall 0 (it occurs: it counts).
    pred = gt.copy()
    pred[0, 0] = 1
    s = scores(confusion_matrix(pred, gt))
    assert s["hair_iou"] == 0 and s["hair_precision"] == 0 and s["hair_recall"] == 0
    assert close(s["mIoU"], 100 * 15 / 16 / 2) and close(s["mean_class_accuracy"], 100 * 15 / 16 / 2)
    # Everything ignored: no pixels, every metric NaN.
    s = scores(confusion_matrix(pred, np.full((4, 4), 255, np.uint8)))
    assert s["pixels"] == 0 and math.isnan(s["mIoU"]) and math.isnan(s["accuracy"])


def test_a_head_that_predicts_no_hair_gets_zero_hair_precision_not_its_accuracy():
    gt = np.zeros((10, 10), np.uint8)
    gt[:3] = 1  # 30% hair
    s = scores(confusion_matrix(np.zeros_like(gt), gt))
    assert s["hair_precision"] == 0 and s["hair_predicted_pixels"] == 0
    assert close(s["accuracy"], 70.0) and close(s["precision"], 35.0)  # (70% background precision + 0) / 2
    assert close(s["f1"], 100 * (2 * 70 / (70 + 100)) / 2) and close(s["mIoU"], 35.0)


def test_scores_equal_torchmetrics_macro_averages_with_zero_division_0():
    """The real library on random splits, degenerate ones included (the README's reading of eq 7-10)."""
    import torch
    from torchmetrics.classification import (
        MulticlassAccuracy,
        MulticlassF1Score,
        MulticlassJaccardIndex,
        MulticlassPrecision,
        MulticlassRecall,
    )

    kw = {"num_classes": 2, "ignore_index": 255}
    metrics = {"mIoU": MulticlassJaccardIndex(average="macro", **kw),
               "accuracy": MulticlassAccuracy(average="micro", **kw),
               "precision": MulticlassPrecision(average="macro", zero_division=0, **kw),
               "f1": MulticlassF1Score(average="macro", zero_division=0, **kw),
               "mean_class_accuracy": MulticlassRecall(average="macro", zero_division=0, **kw)}
    rng = np.random.default_rng(7)
    for case in range(40):
        pred, gt = random_pair(rng, 9, 7, rng.choice([0, 0.02, rng.random()]), rng.choice([0.0, 0.2]),
                               rng.random() * 0.5, 0.3)
        if (gt == 255).all():
            continue  # torchmetrics returns 0 there, we return NaN (no pixel to score)
        got = scores(confusion_matrix(pred, gt))
        for key, m in metrics.items():
            want = 100 * float(m(torch.from_numpy(pred).long(), torch.from_numpy(gt).long()))
            assert math.isclose(got[key], want, abs_tol=1e-4), (case, key, got[key], want)


def test_accuracy_is_pixel_accuracy_not_halved():
    gt = np.array([[0, 0, 0, 1]], np.uint8)
    s = scores(confusion_matrix(gt, gt))
    assert s["accuracy"] == 100.0 and s["hair_pixels"] == 1 and s["background_pixels"] == 3


def test_confusion_rejects_bad_input():
    with pytest.raises(ValueError, match="differ in size"):
        confusion_matrix(np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError, match="class 2"):
        confusion_matrix(np.full((2, 2), 2, np.uint8), np.zeros((2, 2), np.uint8))


# --------------------------------------------------------------------------------------------- boundary
def ref_boundary(mask, valid):
    h, w = mask.shape
    pts = []
    for y in range(h):
        for x in range(w):
            if mask[y, x] and valid[y, x]:
                for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w and not mask[yy, xx] and valid[yy, xx]:
                        pts.append((y, x))
                        break
    return pts


def ref_boundary_counts(pred, gt, tol):
    valid = gt != 255
    bp, bg = ref_boundary(pred == 1, valid), ref_boundary(gt == 1, valid)

    def matched(src, dst):
        return sum(1 for (y, x) in src if any(math.hypot(y - v, x - u) <= tol for (v, u) in dst))

    return [matched(bp, bg), len(bp), matched(bg, bp), len(bg)]


def blob(h, w, cy, cx, r):
    yy, xx = np.mgrid[:h, :w]
    return (((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r).astype(np.uint8)


def test_boundary_counts_equal_brute_force():
    rng = np.random.default_rng(1)
    for case in range(25):
        h, w = int(rng.integers(3, 20)), int(rng.integers(3, 20))
        gt = blob(h, w, rng.integers(0, h), rng.integers(0, w), rng.integers(1, 8))
        pred = np.where(rng.random((h, w)) < 0.15, 1 - gt, gt).astype(np.uint8)
        gt[rng.random((h, w)) < 0.1] = 255
        tol = float(rng.choice([1.0, 1.5, 2.0, 3.2]))
        assert boundary_counts(pred, gt, tol).tolist() == ref_boundary_counts(pred, gt, tol), case


def test_boundary_f_simple_cases():
    gt = blob(64, 64, 32, 32, 15)
    assert boundary_f(boundary_counts(gt, gt)) == 100.0
    assert default_tolerance(gt.shape) == 1.0  # 0.75% of a 90 px diagonal is below 1 px
    near = np.roll(gt, 1, axis=1)  # within the tolerance: still perfect
    assert boundary_f(boundary_counts(near, gt)) == 100.0
    far = np.roll(gt, 6, axis=1)  # beyond it: only the edges that happen to stay close match
    f_far = boundary_f(boundary_counts(far, gt))
    assert 0 < f_far < 60
    # Counts add over images.
    total = boundary_counts(gt, gt) + boundary_counts(far, gt)
    assert boundary_f(total) == pytest.approx(100 * (total[0] / total[1] * 2 * total[2] / total[3])
                                              / (total[0] / total[1] + total[2] / total[3]))
    assert math.isnan(boundary_f(boundary_counts(np.zeros_like(gt), np.zeros_like(gt))))
    assert boundary_f(boundary_counts(np.zeros_like(gt), gt)) == 0.0


# ------------------------------------------------------------------ two readings and the paper's bound
def test_per_image_means_and_the_one_reading_bound_hold_for_both_readings():
    rng = np.random.default_rng(7)
    mats = []
    for _ in range(30):
        gt = (rng.random((20, 30)) < rng.uniform(0.05, 0.6)).astype(np.uint8)
        pred = np.where(rng.random(gt.shape) < rng.uniform(0.02, 0.4), 1 - gt, gt)
        mats.append(confusion_matrix(pred, gt))
    rows = [scores(c) for c in mats]
    means = per_image_means(rows)
    assert means["images"] == 30
    for k in ("mIoU", "accuracy", "precision", "f1", "hair_iou", "hair_f1"):
        assert means[k] == pytest.approx(sum(r[k] for r in rows) / 30), k
    pooled = scores(sum(mats))
    # Within one reading mean IoU >= f(mean F1), f(F) = F / (2 - F): for both of ours ...
    assert pooled["mIoU"] >= miou_floor(pooled["f1"]) - 1e-9
    assert means["mIoU"] >= miou_floor(means["f1"]) - 1e-9
    # ... and tightly: a single class's IoU equals f of its F1.
    assert miou_floor(pooled["hair_f1"]) == pytest.approx(pooled["hair_iou"])
    # An undefined per-image metric is left out of its mean, not counted as 0.
    assert per_image_means([{"mIoU": 80.0, "hair_iou": float("nan")}, {"mIoU": 60.0, "hair_iou": 50.0}])[
        "hair_iou"] == 50.0


def test_the_papers_rows_that_break_the_bound_are_noted():
    assert round(miou_floor(98.28), 2) == 96.62  # Figaro "Ours": reported mIoU 95.40
    ours = next(r for r in paper_rows("figaro") if r["method"].startswith("Ours"))
    assert one_reading_bound(ours) == "F1 98.28 implies mIoU >= 96.62: not one reading"
    yan = next(r for r in paper_rows("figaro") if r["method"].startswith("Yan"))
    assert one_reading_bound(yan) == ""  # 91.25 with F1 95.15 (floor 90.75) can be one reading
    assert one_reading_bound({"mIoU": 90.0, "f1": 94.74}) == ""  # at the bound, within the table's rounding
