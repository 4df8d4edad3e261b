"""The Mask2Former head, its targets and its loss: shapes, learning, ignore pixels, probabilities."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from hairdiff.core.errors import UsageError
from hairdiff.model.mask2former.criterion import SetCriterion
from hairdiff.model.mask2former.head import LEGACY, HeadConfig, Mask2FormerHead, semantic_probs
from hairdiff.model.mask2former.matcher import HungarianMatcher
from hairdiff.model.mask2former.point_sampling import point_targets
from hairdiff.model.mask2former.targets import semantic_targets
from tests.fixtures.stores import ellipse_in

try:
    from hairdiff.cache.levels import LevelSpec
except ImportError:  # cache.levels is written in parallel; same fields
    @dataclasses.dataclass(frozen=True)
    class LevelSpec:
        name: str
        stride: int
        channels: int
        height: int
        width: int

R = 64
TINY = HeadConfig(hidden_dim=32, num_queries=8, nheads=4, dim_feedforward=64, dec_layers=2, enc_layers=1,
                  enc_dim_feedforward=64, mask_dim=32, num_points=256)


def unet_levels(r: int = R) -> list[LevelSpec]:
    """The "unet" tap set: diffusers up-block outputs at strides 32, 16, 8, 8 (two share stride 8)."""
    return [LevelSpec(f"up_blocks.{i}", s, c, r // s, r // s)
            for i, (s, c) in enumerate([(32, 20), (16, 20), (8, 12), (8, 8)])]


def four_stride_levels(r: int = R) -> list[LevelSpec]:
    return [LevelSpec(f"s{s}", s, c, r // s, r // s) for s, c in [(4, 6), (8, 8), (16, 10), (32, 12)]]


def odise_levels(r: int = R) -> list[LevelSpec]:
    """The "odise" tap set's layout (channels scaled down): VAE-encoder 4, 8; UNet 64, 32, 16, 8; VAE-decoder 8, 4."""
    spec = [("enc5", 4, 6), ("enc7", 8, 6), ("unet2", 64, 20), ("unet5", 32, 16), ("unet8", 16, 12),
            ("unet11", 8, 8), ("dec2", 8, 6), ("dec5", 4, 6)]
    return [LevelSpec(n, s, c, r // s, r // s) for n, s, c in spec]


def random_feats(levels, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # float16, as the cache stores them
    return {lv.name: torch.randn(batch, lv.channels, lv.height, lv.width, generator=g).half() for lv in levels}


def hair_labels(batch: int, r: int = R, ignore_rows: int = 0, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    out = np.zeros((batch, r, r), np.uint8)
    for b in range(batch):
        out[b][ellipse_in(r, rng)] = 1
        if ignore_rows:
            out[b, r - ignore_rows:] = 255  # letterbox padding at the bottom
    return torch.from_numpy(out)


def criterion(num_points: int = 256) -> SetCriterion:
    return SetCriterion(2, HungarianMatcher(2.0, 5.0, 5.0, num_points=num_points),
                        {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}, eos_coef=0.1, num_points=num_points)


# ---------------------------------------------------------------------------------------------- shapes
# (levels, mask-feature stride, FPN levels, learned x2 stages): every layout gets stride-4 mask features.
@pytest.mark.parametrize("levels,stride,n_fpn,n_up", [(unet_levels(), 4, 0, 1), (four_stride_levels(), 4, 1, 0),
                                                      (four_stride_levels()[2:], 4, 0, 2), (odise_levels(), 4, 1, 0)])
def test_output_shapes(levels, stride, n_fpn, n_up):
    torch.manual_seed(0)
    head = Mask2FormerHead(levels, TINY)
    assert head.output_stride == stride and head.pixel_decoder.num_fpn == n_fpn
    assert len(head.pixel_decoder.mask_upsample) == n_up
    out = head(random_feats(levels, batch=2))
    q, k = TINY.num_queries, TINY.num_classes
    assert out["pred_logits"].shape == (2, q, k + 1)
    assert out["pred_masks"].shape == (2, q, R // stride, R // stride)
    assert out["pred_logits"].dtype == torch.float32  # fp16 cache input is cast to the head's dtype
    assert len(out["aux_outputs"]) == TINY.dec_layers  # initial prediction + all but the last layer
    for aux in out["aux_outputs"]:
        assert aux["pred_logits"].shape == out["pred_logits"].shape
        assert aux["pred_masks"].shape == out["pred_masks"].shape
    assert all(torch.isfinite(v).all() for v in (out["pred_logits"], out["pred_masks"]))
    # Values: each image's prediction depends on its own features only (no statistic shared across the batch),
    # and the deep-supervision outputs are each layer's own, not copies of the final one.
    head.eval()
    feats = random_feats(levels, batch=2)
    both = head(feats)
    for b in range(2):
        alone = head({k: v[b:b + 1] for k, v in feats.items()})
        for key in ("pred_logits", "pred_masks"):
            torch.testing.assert_close(alone[key][0], both[key][b], atol=2e-4, rtol=1e-4)
    assert not torch.allclose(both["aux_outputs"][-1]["pred_masks"], both["pred_masks"])


def test_legacy_config_keeps_mask_features_at_the_finest_stride():
    # What runs written before stride_range / mask_stride existed rebuild (train.checkpoint fills LEGACY in).
    legacy = dataclasses.replace(TINY, **LEGACY)
    head = Mask2FormerHead(unet_levels(), legacy)
    assert head.output_stride == 8 and len(head.pixel_decoder.mask_upsample) == 0
    feats = random_feats(unet_levels(), 1)
    normed = []  # the queries of every prediction, as the decoder normalises them
    hook = head.predictor.decoder_norm.register_forward_hook(lambda m, i, o: normed.append(o))
    with torch.no_grad():
        out = head(feats)
        hook.remove()
        mask_features, _ = head.pixel_decoder(head.adapter(feats))
        want = torch.einsum("bqc,bchw->bqhw", head.predictor.mask_embed(normed[-1]), mask_features)
    # The final masks are the queries' embeddings against the pixel decoder's stride-8 features, unresampled.
    assert mask_features.shape[-2:] == (R // 8, R // 8)
    torch.testing.assert_close(out["pred_masks"], want)
    odise = Mask2FormerHead(odise_levels(), legacy)
    assert odise.adapter.strides == [4, 8, 16, 32, 64] and odise.pixel_decoder.num_fpn == 2


def test_odise_layout_folds_stride_64_into_32_as_odise_does():
    r = 128  # the stride-64 tap is 2x2: nearest and other resizes differ (a 1x1 map would not tell them apart)
    levels = odise_levels(r)
    torch.manual_seed(0)
    head = Mask2FormerHead(levels, TINY)
    assert head.adapter.strides == [4, 8, 16, 32]
    assert head.adapter.groups == [["enc5", "dec5"], ["enc7", "unet11", "dec2"], ["unet8"], ["unet2", "unet5"]]
    feats = random_feats(levels, 2)
    maps = head.adapter(feats)
    assert [tuple(m.shape[-2:]) for m in maps] == [(r // s, r // s) for s in (4, 8, 16, 32)]
    # ODISE: resize the stride-64 tap to the stride-32 grid (nearest) before its projection, then sum.
    up = torch.nn.functional.interpolate(feats["unet2"].float(), size=(r // 32, r // 32), mode="nearest")
    want = head.adapter.proj["unet2"](up) + head.adapter.proj["unet5"](feats["unet5"].float())
    torch.testing.assert_close(maps[3], want)
    # The pixel decoder attends over 8, 16, 32 (coarse -> fine) and builds mask features at 4.
    mask_features, memory = head.pixel_decoder(maps)
    assert [tuple(m.shape[-2:]) for m in memory] == [(r // 32, r // 32), (r // 16, r // 16), (r // 8, r // 8)]
    assert mask_features.shape[-2:] == (r // 4, r // 4)


def test_strides_below_the_range_fold_up():
    levels = [LevelSpec("s2", 2, 4, R // 2, R // 2), LevelSpec("s4", 4, 4, R // 4, R // 4),
              LevelSpec("s8", 8, 4, R // 8, R // 8)]
    head = Mask2FormerHead(levels, TINY)
    assert head.adapter.strides == [4, 8] and head.adapter.groups[0] == ["s2", "s4"]
    feats = random_feats(levels, 1)
    assert head(feats)["pred_masks"].shape[-2:] == (R // 4, R // 4)
    # The stride-2 level is resized (nearest) to the stride-4 grid before its projection, then summed there.
    down = torch.nn.functional.interpolate(feats["s2"].float(), size=(R // 4, R // 4), mode="nearest")
    want = head.adapter.proj["s2"](down) + head.adapter.proj["s4"](feats["s4"].float())
    torch.testing.assert_close(head.adapter(feats)[0], want)


def test_unet_levels_sharing_a_stride_are_summed():
    head = Mask2FormerHead(unet_levels(), TINY)
    assert head.adapter.strides == [8, 16, 32]
    assert head.adapter.groups[0] == ["up_blocks.2", "up_blocks.3"]
    feats = random_feats(unet_levels(), 1)
    maps = head.adapter(feats)
    assert [tuple(m.shape[-2:]) for m in maps] == [(8, 8), (4, 4), (2, 2)]
    p2, p3 = head.adapter.proj["up_blocks_2"], head.adapter.proj["up_blocks_3"]
    torch.testing.assert_close(maps[0], p2(feats["up_blocks.2"].float()) + p3(feats["up_blocks.3"].float()))


def test_bottleneck_adapter():
    head = Mask2FormerHead(unet_levels(), dataclasses.replace(TINY, adapter="bottleneck"))
    feats = random_feats(unet_levels(), 1)
    out = head(feats)
    assert out["pred_masks"].shape == (1, TINY.num_queries, R // 4, R // 4)
    # Each level through its own residual bottleneck (relu(body + projected shortcut)), summed per stride.
    p2, p3 = head.adapter.proj["up_blocks_2"], head.adapter.proj["up_blocks_3"]
    x2, x3 = feats["up_blocks.2"].float(), feats["up_blocks.3"].float()
    want = torch.relu(p2.body(x2) + p2.shortcut(x2)) + torch.relu(p3.body(x3) + p3.shortcut(x3))
    torch.testing.assert_close(head.adapter(feats)[0], want)
    assert (want >= 0).all() and not torch.allclose(p2(x2), p2.shortcut(x2))


def test_default_config_is_mask2former():
    cfg = HeadConfig()
    assert (cfg.num_queries, cfg.hidden_dim, cfg.nheads, cfg.dim_feedforward, cfg.dec_layers, cfg.enc_layers,
            cfg.enc_points, cfg.mask_dim, cfg.dropout, cfg.num_classes) == (100, 256, 8, 2048, 9, 6, 4, 256, 0.0, 2)
    assert (cfg.class_weight, cfg.mask_weight, cfg.dice_weight, cfg.no_object_weight, cfg.num_points) == \
        (2.0, 5.0, 5.0, 0.1, 12544)


def test_bad_inputs_have_clear_errors():
    head = Mask2FormerHead(unet_levels(), TINY)
    feats = random_feats(unet_levels(), 1)
    del feats["up_blocks.1"]
    with pytest.raises(KeyError, match="up_blocks.1"):
        head(feats)
    bad = [LevelSpec("a", 8, 4, 8, 8), LevelSpec("b", 8, 4, 7, 7)]
    with pytest.raises(ValueError, match="share stride 8"):
        Mask2FormerHead(bad, TINY)
    with pytest.raises(UsageError, match="nheads"):
        HeadConfig(hidden_dim=30, nheads=4)
    with pytest.raises(UsageError, match="mask_stride=16 is coarser"):
        Mask2FormerHead(unet_levels(), dataclasses.replace(TINY, mask_stride=16))
    with pytest.raises(UsageError, match="stride_range"):
        HeadConfig(stride_range=(32, 4))
    with pytest.raises(ValueError, match="outside 0..1"):
        semantic_targets(torch.full((1, 4, 4), 7, dtype=torch.uint8))


def test_autocast_bf16_forward_and_loss_are_finite():
    # The training loop runs the head under bf16 autocast on CUDA; CPU autocast exercises the same casts.
    torch.manual_seed(0)
    head = Mask2FormerHead(four_stride_levels(), TINY)
    targets = semantic_targets(hair_labels(2, ignore_rows=8))
    feats = random_feats(four_stride_levels(), 2)

    def loss_and_grads(autocast: bool):
        head.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = head(feats)
        losses = criterion()(out, targets, generator=torch.Generator().manual_seed(0))
        losses["loss"].backward()
        return losses["loss"].detach(), torch.cat([p.grad.flatten() for p in head.parameters() if p.grad is not None])

    loss, grads = loss_and_grads(True)
    assert torch.isfinite(loss) and torch.isfinite(grads).all()
    # ... and close to the float32 values (measured: 0.05% on the loss, gradient cosine 0.9995).
    loss32, grads32 = loss_and_grads(False)
    assert abs(float(loss) - float(loss32)) < 0.01 * float(loss32), (float(loss), float(loss32))
    assert torch.nn.functional.cosine_similarity(grads, grads32, dim=0) > 0.99


# ------------------------------------------------------------------------------------------- targets
def test_semantic_targets():
    lab = hair_labels(3, ignore_rows=10)
    lab[2] = 0
    lab[2, -10:] = 255
    t = semantic_targets(lab)
    assert t[0]["labels"].tolist() == [0, 1] and t[2]["labels"].tolist() == [0]
    assert t[0]["masks"].shape == (2, R, R) and t[0]["masks"].dtype == torch.float32
    assert torch.equal(t[0]["valid"], lab[0] != 255)
    assert torch.equal(t[0]["masks"][1].bool(), lab[0] == 1)
    assert torch.equal(t[0]["masks"][0].bool(), lab[0] == 0)  # 0 on ignored pixels, not "background"
    empty = semantic_targets(torch.full((1, 8, 8), 255, dtype=torch.uint8))[0]
    assert empty["labels"].numel() == 0 and empty["masks"].shape == (0, 8, 8) and not empty["valid"].any()


# ---------------------------------------------------------------------------------------------- loss
def test_loss_terms_and_training_decreases_loss():
    torch.manual_seed(0)
    levels = unet_levels()
    head = Mask2FormerHead(levels, TINY)
    feats = random_feats(levels, 2, seed=3)
    targets = semantic_targets(hair_labels(2, ignore_rows=6, seed=1))
    crit = criterion()
    opt = torch.optim.Adam(head.parameters(), lr=1e-3)
    history = []
    for step in range(30):
        losses = crit(head(feats), targets, generator=torch.Generator().manual_seed(step))
        if step == 0:
            # every layer supervised: final + initial + (dec_layers - 1) intermediate predictions
            assert set(losses) == {"loss"} | {f"{n}{s}" for n in ("loss_ce", "loss_mask", "loss_dice")
                                              for s in ["", *[f"_{i}" for i in range(TINY.dec_layers)]]}
            weighted = sum(v * {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}[k.rstrip("_0123456789")]
                           for k, v in losses.items() if k != "loss")
            torch.testing.assert_close(losses["loss"], weighted)
        assert torch.isfinite(losses["loss"])
        history.append(float(losses["loss"].detach()))
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
    assert np.mean(history[-5:]) < 0.6 * history[0], history


def _ignore_case(seed: int = 0):
    """Predictions at label resolution and targets whose bottom 12 rows are ignored."""
    g = torch.Generator().manual_seed(seed)
    r, q = 32, 6
    out = {"pred_logits": torch.randn(2, q, 3, generator=g), "pred_masks": torch.randn(2, q, r, r, generator=g),
           "aux_outputs": [{"pred_logits": torch.randn(2, q, 3, generator=g),
                            "pred_masks": torch.randn(2, q, r, r, generator=g)}]}
    labels = hair_labels(2, r=r, ignore_rows=12, seed=seed)
    return out, labels


def _changed_in_ignored_rows(out: dict, first_row: int) -> dict:
    def change(masks):
        masks = masks.clone()
        masks[:, :, first_row:] = torch.where(masks[:, :, first_row:] > 0, -8.0, 8.0)  # confidently wrong
        return masks

    return {"pred_logits": out["pred_logits"], "pred_masks": change(out["pred_masks"]),
            "aux_outputs": [{"pred_logits": a["pred_logits"], "pred_masks": change(a["pred_masks"])}
                            for a in out["aux_outputs"]]}


def test_ignored_pixels_do_not_change_the_loss():
    out, labels = _ignore_case()
    crit = criterion(num_points=300)
    targets = semantic_targets(labels)
    # Rows 20..31 are ignored. A point carries weight only when its whole bilinear footprint is valid, so it
    # reads predictions of rows <= 19 only: changing them from the boundary row 20 on must change nothing.
    changed = _changed_in_ignored_rows(out, first_row=20)
    base = crit(out, targets, generator=torch.Generator().manual_seed(5))
    again = crit(changed, targets, generator=torch.Generator().manual_seed(5))
    for k in base:
        torch.testing.assert_close(again[k], base[k], atol=1e-6, rtol=0, msg=k)

    # The same change does matter when those pixels are valid (so the check above can fail).
    labels_valid = labels.clone()
    labels_valid[labels_valid == 255] = 0
    targets_valid = semantic_targets(labels_valid)
    base_v = crit(out, targets_valid, generator=torch.Generator().manual_seed(5))
    again_v = crit(changed, targets_valid, generator=torch.Generator().manual_seed(5))
    assert float(again_v["loss_mask"]) > float(base_v["loss_mask"]) + 0.1


def test_ignore_region_gets_no_gradient():
    out, labels = _ignore_case(seed=1)
    masks = out["pred_masks"].clone().requires_grad_(True)
    out = {**out, "pred_masks": masks, "aux_outputs": []}
    crit = criterion(num_points=300)
    loss = crit(out, semantic_targets(labels), generator=torch.Generator().manual_seed(0))["loss"]
    loss.backward()
    assert masks.grad[:, :, 19].abs().sum() > 0  # the last valid row is supervised
    assert masks.grad[:, :, 20:].abs().max() == 0  # the first ignored row is not, not even through interpolation


def test_a_point_touching_an_ignore_pixel_has_no_weight():
    r = 32
    valid = torch.ones(1, 1, r, r)
    valid[..., 20:, :] = 0
    masks = torch.ones(1, 1, r, r) * valid
    masks[..., 20:, :] = 0.7  # whatever an ignored pixel holds must not reach a label
    # Footprint rows (pixel centres at (row + 0.5) / r): 19 and 20 with a 0.001 share on 20; rows 18-19;
    # exactly row 19's centre (row 20's share is 0); well inside; inside the ignored rows.
    ys = [19.001, 18.999, 19.0, 10.3, 25.0]
    coords = torch.tensor([[[0.5, (y + 0.5) / r] for y in ys]])
    labels, w = point_targets(masks, valid, coords)
    assert w[0].tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    assert labels[0].tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


# ----------------------------------------------------------------------------------- probabilities
def test_semantic_probs():
    g = torch.Generator().manual_seed(0)
    logits, masks = torch.randn(2, 5, 3, generator=g), torch.randn(2, 5, 4, 4, generator=g)
    probs = semantic_probs(logits, masks)
    assert probs.shape == (2, 2, 4, 4)
    cls = logits.softmax(-1)
    for b in range(2):
        for k in range(2):
            expected = sum(cls[b, q, k] * masks[b, q].sigmoid() for q in range(5))
            torch.testing.assert_close(probs[b, k], expected)
    # Masks certain everywhere: per pixel the classes sum to the queries' total non-"no object" mass.
    sure = semantic_probs(logits, torch.full_like(masks, 40.0))
    torch.testing.assert_close(sure.sum(1), (1 - cls[..., -1]).sum(1)[:, None, None].expand(2, 4, 4))
    # Output-dict form and resizing to the store resolution: the mask *logits* are resized, then the sigmoid.
    big = semantic_probs({"pred_logits": logits, "pred_masks": masks}, out_size=(16, 16))
    assert big.shape == (2, 2, 16, 16)
    up = torch.nn.functional.interpolate(masks, size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(big, torch.einsum("bqk,bqhw->bkhw", cls[..., :-1], up.sigmoid()))
    # ... which is not the same as resizing probabilities (so the check above can tell the two orders apart).
    blurred = torch.nn.functional.interpolate(probs, size=(16, 16), mode="bilinear", align_corners=False)
    assert (big - blurred).abs().max() > 1e-2
