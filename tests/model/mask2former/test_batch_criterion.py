"""The batched criterion is the per-image reference criterion, and the device-side assignment is scipy's.

Reference: criterion.SetCriterion called once on the whole batch (Mask2Former's normalisation: the batch's
number of masks, the class term's mean over the batch), given the same point draws. Batches of 1, 2 and 16,
with images without hair, all hair, wholly ignored images and ignore rows.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from hairdiff.model.mask2former.batch_criterion import build_batch_criterion, term_names
from hairdiff.model.mask2former.criterion import build_criterion
from hairdiff.model.mask2former.head import HeadConfig
from hairdiff.model.mask2former.matcher import finite_costs, assign
from hairdiff.model.mask2former.targets import dense_targets, semantic_targets
from tests.fixtures.stores import ellipse_in

R, H, Q, L = 64, 16, 10, 4  # labels R x R, mask logits H x H (stride 4), queries, supervised predictions
CFG = HeadConfig(num_points=500)


def labels(batch: int, seed: int = 0) -> torch.Tensor:
    """Hair ellipses with letterbox-like ignore rows or columns; image 1 has no hair, image 2 is all hair,
    image 3 is wholly ignored, image 4 is hair next to ignore pixels only."""
    rng = np.random.default_rng(seed)
    out = np.zeros((batch, R, R), np.uint8)
    for b in range(batch):
        out[b][ellipse_in(R, rng, (0.2, 0.8), (0.1, 0.35))] = 1
        cut = int(rng.integers(0, R // 3))
        if b % 2:
            out[b, R - cut:] = 255
        else:
            out[b, :, R - cut:] = 255
    special = {1: lambda x: np.where(x == 1, 0, x), 2: lambda x: np.where(x == 0, 1, x),
               3: lambda x: np.full_like(x, 255), 4: lambda x: np.where(x == 0, 255, x)}
    for b, f in special.items():
        if b < batch:
            out[b] = f(out[b])
    return torch.from_numpy(out)


def predictions(batch: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    # Logits around 0 with some confident regions: importance sampling has uncertain points to find.
    layer = lambda: {"pred_logits": torch.randn(batch, Q, 3, generator=g),  # noqa: E731
                     "pred_masks": 3 * torch.randn(batch, Q, H, H, generator=g)}
    final = layer()
    return {**final, "aux_outputs": [layer() for _ in range(L - 1)]}


def leaves(out: dict) -> list[torch.Tensor]:
    return [t for p in [*out["aux_outputs"], out] for t in (p["pred_logits"], p["pred_masks"])]


@pytest.mark.parametrize("batch", [1, 2, 16])
def test_batched_loss_equals_the_reference_on_the_whole_batch(batch):
    lab = labels(batch, seed=batch)
    out = predictions(batch, seed=batch)
    for t in leaves(out):
        t.requires_grad_(True)
    batched = build_batch_criterion(CFG)
    draws = batched.draw(torch.Generator().manual_seed(7), L, batch)

    loss, terms = batched(out, dense_targets(lab), draws)
    ref_terms = build_criterion(CFG)(out, semantic_targets(lab), draws=draws)
    ref_loss = ref_terms.pop("loss")

    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=0)
    names = term_names(L)
    assert list(ref_terms) == names  # same terms, in the order the log writes them
    torch.testing.assert_close(terms, torch.stack([ref_terms[n] for n in names]), rtol=1e-5, atol=1e-7)
    grads = torch.autograd.grad(loss, leaves(out))
    ref_grads = torch.autograd.grad(ref_loss, leaves(out))
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-8)
    assert any(g.abs().sum() > 0 for g in grads[1::2])  # the masks are supervised


def test_points_are_drawn_once_and_sliced_by_global_index():
    """A process's part of the global batch gets exactly the rows of the global draw (resume and DDP)."""
    crit = build_batch_criterion(CFG)
    whole = crit.draw(torch.Generator().manual_seed(3), L, 8)
    again = crit.draw(torch.Generator().manual_seed(3), L, 8).samples(4, 8)
    assert torch.equal(whole.matcher[:, 4:], again.matcher) and torch.equal(whole.fill[:, 4:], again.fill)
    # ... and the loss of that part is the reference's on those samples with those points.
    lab, out = labels(8, seed=5), predictions(8, seed=5)
    part = {"pred_logits": out["pred_logits"][4:], "pred_masks": out["pred_masks"][4:],
            "aux_outputs": [{k: v[4:] for k, v in a.items()} for a in out["aux_outputs"]]}
    loss, _ = crit(part, dense_targets(lab[4:]), again)
    ref = build_criterion(CFG)(part, semantic_targets(lab[4:]), draws=again)["loss"]
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=0)


def test_an_image_with_two_masks_weighs_twice_one_with_one():
    """Mask2Former's normalisation, not the mean of per-image losses: the mask terms of a batch are the sum
    over its masks divided by their number, so with one two-mask image and one one-mask image the batch's mask
    loss is (m0 + m1 + m2) / 3, not ((m0 + m1) / 2 + m2) / 2."""
    lab, out = labels(2, seed=9), predictions(2, seed=9)
    lab[1][lab[1] == 0] = 1  # image 0: hair and background; image 1: hair only
    crit = build_batch_criterion(CFG)
    draws = crit.draw(torch.Generator().manual_seed(1), L, 2)
    _, terms = crit(out, dense_targets(lab), draws)

    def alone(b: int) -> torch.Tensor:
        one = {"pred_logits": out["pred_logits"][b:b + 1], "pred_masks": out["pred_masks"][b:b + 1],
               "aux_outputs": [{k: v[b:b + 1] for k, v in a.items()} for a in out["aux_outputs"]]}
        return crit(one, dense_targets(lab[b:b + 1]), draws.samples(b, b + 1))[1]

    single, names = [alone(0), alone(1)], term_names(L)
    for name in ("loss_mask", "loss_dice"):
        i = names.index(name)
        want = (2 * single[0][i] + single[1][i]) / 3  # each image's sum over its masks, over the batch's 3 masks
        torch.testing.assert_close(terms[i], want, rtol=1e-5, atol=1e-7)
        assert not torch.isclose(terms[i], (single[0][i] + single[1][i]) / 2, rtol=1e-3)


# ----------------------------------------------------------------------------------------- assignment
def scipy_assignment(cost: np.ndarray, present: np.ndarray) -> np.ndarray:
    query = np.full(present.shape, -1)
    cols = np.flatnonzero(present)
    if cols.size:
        rows, j = linear_sum_assignment(cost[:, cols])
        query[cols[j]] = rows
    return query


def random_cost_sets(n: int, seed: int = 0):
    """(cost (Q, K), present (K,)) pairs: Gaussian, uniform, heavy-tailed costs, and costs whose columns share
    their best query (the case the closed form has to resolve), with 1 or 2 targets present."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        q, k = int(rng.integers(2, 120)), int(rng.choice([1, 2], p=[0.2, 0.8]))
        kind = i % 4
        if kind == 0:
            cost = rng.normal(size=(q, k))
        elif kind == 1:
            cost = rng.uniform(-2, 0, size=(q, k))
        elif kind == 2:
            cost = rng.standard_cauchy(size=(q, k))
        else:  # one query good for every target: the best of both columns coincide
            cost = rng.normal(size=(q, k)) * 0.1 + rng.normal(size=(q, 1)) * 3
        present = rng.random(k) < 0.85
        yield cost.astype(np.float32), present


def test_assignment_equals_scipy_on_1000_random_cost_sets():
    sets = list(random_cost_sets(1000))
    clashes = 0
    for cost, present in sets:
        query, matched = assign(torch.from_numpy(cost), torch.from_numpy(present))
        expect = scipy_assignment(cost, present)
        assert matched.tolist() == present.tolist()
        got = np.where(present, query.numpy(), -1)
        assert got.tolist() == expect.tolist(), (cost, present)
        clashes += cost.shape[1] == 2 and present.all() and np.argmin(cost[:, 0]) == np.argmin(cost[:, 1])
    assert clashes >= 150  # the closed form's second case was exercised, not only the easy one


def test_assignment_batched_over_predictions_and_images():
    sets = [s for s in random_cost_sets(60, seed=1) if s[0].shape[1] == 2][:40]
    q = min(c.shape[0] for c, _ in sets)
    cost = torch.stack([torch.from_numpy(c[:q]) for c, _ in sets]).view(4, 10, q, 2)
    present = torch.stack([torch.from_numpy(p) for _, p in sets]).view(4, 10, 2)
    query, _ = assign(cost, present)
    for i, (c, p) in enumerate(sets):
        got = np.where(p, query.view(-1, 2)[i].numpy(), -1)
        assert got.tolist() == scipy_assignment(c[:q], p).tolist()


def test_assignment_on_ties_and_non_finite_costs_is_optimal():
    """Exact ties: scipy breaks them its own way, ours takes the lower query; both are optimal. Non-finite
    costs (made the last resort, as the reference does) never win over finite ones."""
    rng = np.random.default_rng(2)
    same = 0
    for _ in range(500):
        q = int(rng.integers(2, 6))
        cost = rng.integers(0, 3, size=(q, 2)).astype(np.float32)  # many exact ties
        present = np.array([True, True])
        query, _ = assign(torch.from_numpy(cost), torch.from_numpy(present))
        ref = scipy_assignment(cost, present)
        assert query[0] != query[1]
        assert cost[query.numpy(), [0, 1]].sum() == cost[ref, [0, 1]].sum()
        same += query.tolist() == ref.tolist()
    assert same > 400  # on most tied sets both pick the same pair anyway
    bad = torch.tensor([[float("nan"), 1.0], [0.5, float("inf")], [2.0, 3.0]])
    query, _ = assign(finite_costs(bad), torch.tensor([True, True]))
    assert query.tolist() == [1, 0]
    # All-equal costs, one query per target: the two lowest queries.
    assert assign(torch.zeros(5, 2), torch.tensor([True, True]))[0].tolist() == [0, 1]


def test_host_assignment_for_more_classes_than_the_closed_form():
    rng = np.random.default_rng(4)
    cost = rng.normal(size=(3, 7, 5)).astype(np.float32)  # 5 classes
    present = rng.random((3, 5)) < 0.7
    query, matched = assign(torch.from_numpy(cost), torch.from_numpy(present))
    for n in range(3):
        assert np.where(present[n], query[n].numpy(), -1).tolist() == scipy_assignment(cost[n], present[n]).tolist()
    assert matched.numpy().tolist() == present.tolist()
    with pytest.raises(ValueError, match="closed form"):
        assign(torch.from_numpy(cost), torch.from_numpy(present), host=False)


# -------------------------------------------------------------------------------------------- targets
def test_dense_targets_hold_what_the_per_image_targets_hold():
    from hairdiff.model.mask2former.targets import check_label_values

    lab = labels(6, seed=3)
    dense, listed = dense_targets(lab), semantic_targets(lab)
    for b, t in enumerate(listed):
        assert dense.present[b].nonzero().flatten().tolist() == t["labels"].tolist()
        torch.testing.assert_close(dense.masks[b][t["labels"]], t["masks"], rtol=0, atol=0)
        assert torch.equal(dense.valid[b].bool(), t["valid"])
    assert not dense.present[3].any()  # the wholly ignored image
    check_label_values(lab, 2)
    bad = lab.clone()
    bad[0, 0, 0], bad[1, 0, 0] = 7, 200
    with pytest.raises(ValueError, match=r"label values \[7, 200\]"):
        check_label_values(bad, 2)
    with pytest.raises(ValueError, match=r"\[-1\]"):
        check_label_values(torch.tensor([[[0, -1]]]), 2)
