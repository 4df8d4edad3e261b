"""Our Mask2Former port agrees with transformers' implementation (fp32, tight tolerance).

Compared: pixel decoder (deformable encoder + FPN + mask projection), masked-attention decoder with class
head (every deep-supervision prediction), Hungarian matcher, and the loss (every term, every layer, the
weighted total and its gradient). Weights are copied between the two through an explicit name mapping,
in both directions (theirs -> ours for the pixel decoder, ours -> theirs for the decoder); the mapping
must cover every parameter on both sides.

Deliberate differences: our input adapter (theirs has no equivalent, not compared) and the ignore handling
of the loss: transformers has none (ignore pixels are negatives of every mask, as in Mask2Former), so the
training step's loss is compared with ours ("skip") on a batch without ignore pixels, and with Mask2Former's
("negative", `--head ignore_pixels=negative`) on one with them; test_head.py checks ours.
Known transformers conventions:
it builds decoder_layers - 1 masked layers (so theirs gets dec_layers + 1); its loss builds the matcher
from config.class_weight in 5.x (4.x hard-coded 1.0), so we take the class cost from its matcher;
its standalone modules skip weight init (level_embed is uninitialised), so every weight is copied.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

tf_m2f = pytest.importorskip("transformers.models.mask2former.modeling_mask2former")
from transformers import Mask2FormerConfig  # noqa: E402

from hairdiff.model.mask2former.batch_criterion import term_names  # noqa: E402
from hairdiff.model.mask2former.criterion import SetCriterion  # noqa: E402
from hairdiff.model.mask2former.matcher import HungarianMatcher  # noqa: E402
from hairdiff.model.mask2former.pixel_decoder import MSDeformAttnPixelDecoder  # noqa: E402
from hairdiff.model.mask2former.targets import semantic_targets  # noqa: E402
from hairdiff.model.mask2former.transformer_decoder import MaskedAttentionDecoder  # noqa: E402

R = 64
STRIDES = [4, 8, 16, 32]
CHANNELS = [8, 12, 16, 24]
DIM, HEADS, QUERIES, DEC_LAYERS, ENC_LAYERS, FFN, ENC_FFN, POINTS = 32, 4, 8, 3, 2, 64, 48, 112
ATOL = 1e-5


def their_config() -> Mask2FormerConfig:
    return Mask2FormerConfig(
        feature_size=DIM, mask_feature_size=DIM, hidden_dim=DIM, encoder_feedforward_dim=ENC_FFN,
        encoder_layers=ENC_LAYERS, decoder_layers=DEC_LAYERS + 1, num_attention_heads=HEADS, dim_feedforward=FFN,
        dropout=0.0, pre_norm=False, enforce_input_projection=False, common_stride=4, num_queries=QUERIES,
        num_labels=2, no_object_weight=0.1, class_weight=2.0, mask_weight=5.0, dice_weight=5.0,
        train_num_points=POINTS, oversample_ratio=3.0, importance_sample_ratio=0.75, feature_strides=STRIDES)


# ------------------------------------------------------------------------------- state-dict mappings
def pixel_decoder_names(n_layers: int, n_fpn: int) -> dict[str, str]:
    """our pixel-decoder parameter name -> transformers' Mask2FormerPixelDecoder name."""
    m = {"level_embed": "level_embed", "mask_projection.weight": "mask_projection.weight",
         "mask_projection.bias": "mask_projection.bias"}
    for i in range(3):
        for k in ("0.weight", "0.bias", "1.weight", "1.bias"):
            m[f"input_proj.{i}.{k}"] = f"input_projections.{i}.{k}"
    for layer in range(n_layers):
        ours, theirs = f"layers.{layer}", f"encoder.layers.{layer}"
        for lin in ("sampling_offsets", "attention_weights", "value_proj", "output_proj"):
            for p in ("weight", "bias"):
                m[f"{ours}.self_attn.{lin}.{p}"] = f"{theirs}.self_attn.{lin}.{p}"
        for a, b in (("norm1", "self_attn_layer_norm"), ("linear1", "fc1"), ("linear2", "fc2"),
                     ("norm2", "final_layer_norm")):
            for p in ("weight", "bias"):
                m[f"{ours}.{a}.{p}"] = f"{theirs}.{b}.{p}"
    for i in range(n_fpn):  # index 0 = finest on both sides (theirs: adapter_1 / layer_1)
        m[f"lateral_convs.{i}.0.weight"] = f"adapter_{i + 1}.0.weight"
        m[f"output_convs.{i}.0.weight"] = f"layer_{i + 1}.0.weight"
        for p in ("weight", "bias"):
            m[f"lateral_convs.{i}.1.{p}"] = f"adapter_{i + 1}.1.{p}"
            m[f"output_convs.{i}.1.{p}"] = f"layer_{i + 1}.1.{p}"
    return m


def decoder_to_theirs(sd: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """our MaskedAttentionDecoder state dict -> transformers' TransformerModule (+ class_predictor).

    Our self-attention is torch's MultiheadAttention (packed q/k/v); theirs has separate q/k/v projections.
    """
    t = "transformer."
    out = {"class_predictor.weight": sd["class_embed.weight"], "class_predictor.bias": sd["class_embed.bias"],
           t + "level_embed.weight": sd["level_embed.weight"], t + "queries_features.weight": sd["query_feat.weight"],
           t + "queries_embedder.weight": sd["query_embed.weight"],
           t + "decoder.layernorm.weight": sd["decoder_norm.weight"], t + "decoder.layernorm.bias": sd["decoder_norm.bias"]}
    for k in range(3):
        for p in ("weight", "bias"):
            out[f"{t}decoder.mask_predictor.mask_embedder.{k}.0.{p}"] = sd[f"mask_embed.layers.{k}.{p}"]
    for layer in range(n_layers):
        o, th = f"layers.{layer}.", f"{t}decoder.layers.{layer}."
        for p in ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"):
            out[th + "cross_attn." + p] = sd[o + "cross_attn." + p]
        for name, chunk in zip(("q_proj", "k_proj", "v_proj"), sd[o + "self_attn.in_proj_weight"].chunk(3)):
            out[f"{th}self_attn.{name}.weight"] = chunk
        for name, chunk in zip(("q_proj", "k_proj", "v_proj"), sd[o + "self_attn.in_proj_bias"].chunk(3)):
            out[f"{th}self_attn.{name}.bias"] = chunk
        for a, b in (("self_attn.out_proj", "self_attn.out_proj"), ("norm_cross", "cross_attn_layer_norm"),
                     ("norm_self", "self_attn_layer_norm"), ("linear1", "fc1"), ("linear2", "fc2"),
                     ("norm_ffn", "final_layer_norm")):
            for p in ("weight", "bias"):
                out[f"{th}{b}.{p}"] = sd[f"{o}{a}.{p}"]
    return out


def load_exact(module: torch.nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """Load a full state dict: every key present on both sides, same shapes."""
    own = module.state_dict()
    assert set(sd) == set(own), f"mapping mismatch: missing {set(own) - set(sd)}, extra {set(sd) - set(own)}"
    for k, v in sd.items():
        assert own[k].shape == v.shape, f"{k}: {tuple(own[k].shape)} vs {tuple(v.shape)}"
    module.load_state_dict({k: v.clone() for k, v in sd.items()}, strict=True)


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    cfg = their_config()
    theirs_pd = tf_m2f.Mask2FormerPixelDecoder(cfg, feature_channels=CHANNELS).eval()
    torch.nn.init.normal_(theirs_pd.level_embed)  # left uninitialised by transformers when built standalone
    ours_pd = MSDeformAttnPixelDecoder(CHANNELS, STRIDES, conv_dim=DIM, mask_dim=DIM, enc_layers=ENC_LAYERS,
                                       n_heads=HEADS, n_points=4, dim_feedforward=ENC_FFN).eval()
    names = pixel_decoder_names(ENC_LAYERS, ours_pd.num_fpn)
    theirs_sd = theirs_pd.state_dict()
    load_exact(ours_pd, {o: theirs_sd[t] for o, t in names.items()})  # theirs -> ours
    assert set(names.values()) == set(theirs_sd), "pixel-decoder mapping does not cover transformers' parameters"

    ours_dec = MaskedAttentionDecoder(DIM, 2, hidden_dim=DIM, num_queries=QUERIES, n_heads=HEADS,
                                      dim_feedforward=FFN, dec_layers=DEC_LAYERS, mask_dim=DIM, num_levels=3).eval()
    theirs_dec = torch.nn.ModuleDict({"transformer": tf_m2f.Mask2FormerTransformerModule(DIM, cfg),
                                      "class_predictor": torch.nn.Linear(DIM, 3)}).eval()
    assert len(theirs_dec["transformer"].decoder.layers) == DEC_LAYERS  # their decoder_layers - 1
    load_exact(theirs_dec, decoder_to_theirs(ours_dec.state_dict(), DEC_LAYERS))  # ours -> theirs
    return cfg, ours_pd, theirs_pd, ours_dec, theirs_dec


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(2, c, R // s, R // s, generator=g) for c, s in zip(CHANNELS, STRIDES)]
    yy, xx = torch.meshgrid(torch.arange(R), torch.arange(R), indexing="ij")
    lab = torch.zeros(2, R, R, dtype=torch.uint8)
    lab[0][((yy - 24) ** 2 + (xx - 30) ** 2) < 15 ** 2] = 1   # hair + background
    lab[1] = 1                                              # only hair
    return feats, semantic_targets(lab)


def run_theirs(models, feats):
    _, _, theirs_pd, _, theirs_dec = models
    pd = theirs_pd(feats, return_dict=True)
    dec = theirs_dec["transformer"](list(pd.multi_scale_features), pd.mask_features)
    logits = [theirs_dec["class_predictor"](h.transpose(0, 1)) for h in dec.intermediate_hidden_states]
    return pd, logits, list(dec.masks_queries_logits)


# ------------------------------------------------------------------------------------------------ tests
@torch.no_grad()
def test_pixel_decoder_and_decoder_match(models, inputs):
    _, ours_pd, _, ours_dec, _ = models
    feats, _ = inputs
    pd, their_logits, their_masks = run_theirs(models, feats)

    mask_features, memory = ours_pd(feats)
    assert mask_features.shape == (2, DIM, R // 4, R // 4)
    torch.testing.assert_close(mask_features, pd.mask_features, atol=ATOL, rtol=0)
    assert len(memory) == 3
    for ours, theirs in zip(memory, pd.multi_scale_features):  # coarse -> fine on both sides
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)

    out = ours_dec(memory, mask_features)
    ours_logits = [a["pred_logits"] for a in out["aux_outputs"]] + [out["pred_logits"]]
    ours_masks = [a["pred_masks"] for a in out["aux_outputs"]] + [out["pred_masks"]]
    assert len(ours_logits) == len(their_logits) == DEC_LAYERS + 1
    for i, (a, b) in enumerate(zip(ours_logits, their_logits)):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0, msg=f"class logits of prediction {i}")
    for i, (a, b) in enumerate(zip(ours_masks, their_masks)):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0, msg=f"mask logits of prediction {i}")
    # Masked attention must actually mask something, or the comparison above would not exercise it.
    assert (torch.stack(ours_masks[:-1]).sigmoid() < 0.5).any()


@torch.no_grad()
def test_matcher_matches(models, inputs):
    feats, targets = inputs
    _, their_logits, their_masks = run_theirs(models, feats)
    theirs = tf_m2f.Mask2FormerHungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=POINTS)
    ours = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=POINTS)
    for layer in range(len(their_logits)):
        torch.manual_seed(10 + layer)
        ref = theirs(their_masks[layer], their_logits[layer], [t["masks"] for t in targets],
                     [t["labels"] for t in targets])
        torch.manual_seed(10 + layer)
        got = ours({"pred_logits": their_logits[layer], "pred_masks": their_masks[layer]}, targets)
        for (ri, rj), (gi, gj) in zip(ref, got):
            assert ri.tolist() == gi.tolist() and rj.tolist() == gj.tolist()


def test_loss_matches(models, inputs):
    cfg, *_ = models
    feats, targets = inputs
    with torch.no_grad():
        _, their_logits, their_masks = run_theirs(models, feats)
    # The same leaf tensors go into both losses, so gradients can be compared too.
    logits = [x.clone().requires_grad_(True) for x in their_logits]
    masks = [x.clone().requires_grad_(True) for x in their_masks]

    weight_dict = {"loss_cross_entropy": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}
    their_loss = tf_m2f.Mask2FormerLoss(cfg, weight_dict)
    ours = SetCriterion(2, HungarianMatcher(cost_class=their_loss.matcher.cost_class, cost_mask=5.0, cost_dice=5.0,
                                            num_points=POINTS),
                        {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}, eos_coef=0.1, num_points=POINTS,
                        oversample_ratio=3.0, importance_sample_ratio=0.75)

    torch.manual_seed(123)
    ref = their_loss(masks[-1], logits[-1], [t["masks"] for t in targets], [t["labels"] for t in targets],
                     auxiliary_predictions=[{"masks_queries_logits": m, "class_queries_logits": c}
                                            for m, c in zip(masks[:-1], logits[:-1])])
    # Their weighted total, as Mask2FormerForUniversalSegmentation.get_loss_dict + get_loss compute it.
    ref_total = sum(v * next(w for k, w in weight_dict.items() if k in name) for name, v in ref.items())
    ref_grads = torch.autograd.grad(ref_total, logits + masks)

    torch.manual_seed(123)
    got = ours({"pred_logits": logits[-1], "pred_masks": masks[-1],
                "aux_outputs": [{"pred_logits": c, "pred_masks": m} for c, m in zip(logits[:-1], masks[:-1])]},
               targets)
    renamed = {k.replace("loss_cross_entropy", "loss_ce"): v for k, v in ref.items()}
    assert set(got) - {"loss"} == set(renamed)
    assert len(renamed) == 3 * (DEC_LAYERS + 1)
    for k, v in renamed.items():
        torch.testing.assert_close(got[k], v, atol=ATOL, rtol=0, msg=k)
    torch.testing.assert_close(got["loss"], ref_total, atol=ATOL, rtol=0)
    got_grads = torch.autograd.grad(got["loss"], logits + masks)
    for a, b in zip(got_grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


# ----------------------------------------------------------------------- the loss that actually trains
def mixed_batch() -> np.ndarray:
    """Labels (6, 32, 32) as training batches hold them: hair and background; hair only (a crop inside the hair);
    background only (a crop beside it, or an image without hair); then crops reaching the letterbox padding
    or a view's canvas (ignore pixels) with both classes, with hair only, and with background only."""
    yy, xx = np.mgrid[:32, :32]
    lab = np.zeros((6, 32, 32), np.uint8)
    lab[0][((yy - 14) / 7) ** 2 + ((xx - 17) / 9) ** 2 < 1] = 1
    lab[1] = 1
    lab[3][((yy - 10) / 8) ** 2 + ((xx - 12) / 6) ** 2 < 1] = 1
    lab[3, 24:] = 255                       # letterbox rows
    lab[4] = 1
    lab[4, :, 20:] = 255                    # hair beside a canvas
    lab[5, 9:, :] = 255                     # background above padding
    return lab


def their_step_loss(monkeypatch, outputs: dict, lab: np.ndarray, draws, n_pred: int) -> tuple:
    """transformers' Mask2FormerLoss called ONCE on the whole batch, on our head's predictions, with the points
    of our draws: (weighted total, terms in term_names order). Their points come from torch.rand; here
    torch.rand hands them our draws in the order theirs asks: per prediction (final first, then aux 0, 1, ...)
    each image's matcher points, then the oversampled and the uniform points of every matched mask of the
    batch (image by image, in matching order)."""
    theirs = tf_m2f.Mask2FormerLoss(their_config(), {"loss_cross_entropy": 2.0, "loss_mask": 5.0, "loss_dice": 5.0})
    listed = semantic_targets(torch.from_numpy(lab))
    order = [n_pred - 1, *range(n_pred - 1)]  # theirs: the final prediction, then aux 0, 1, ...
    state = {"layer": 0, "image": 0, "classes": None}
    their_match = theirs.matcher.forward

    def match(*args, **kw):
        state["image"] = 0
        out = their_match(*args, **kw)
        state["classes"] = [t["labels"][torch.as_tensor(j)] for t, (_, j) in zip(listed, out)]  # matched masks' classes
        return out

    def rand(*size, **kw):
        size = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else size
        layer = order[state["layer"]]
        if size == (1, POINTS, 2):  # the matcher's points of the next image
            state["image"] += 1
            return draws.matcher[layer, state["image"] - 1][None].clone()
        which = "oversampled" if size[1] == draws.oversampled.shape[3] else "fill"
        assert size[1] == getattr(draws, which).shape[3], size
        rows = torch.cat([getattr(draws, which)[layer, b][c] for b, c in enumerate(state["classes"])])
        assert rows.shape[0] == size[0], (rows.shape, size)
        if which == "fill" or draws.fill.shape[3] == 0:
            state["layer"] += 1
        return rows.clone()

    monkeypatch.setattr(theirs.matcher, "forward", match)
    monkeypatch.setattr(torch, "rand", rand)
    ref = theirs(outputs["pred_masks"].float(), outputs["pred_logits"].float(), [t["masks"] for t in listed],
                 [t["labels"] for t in listed],
                 auxiliary_predictions=[{"masks_queries_logits": a["pred_masks"].float(),
                                         "class_queries_logits": a["pred_logits"].float()}
                                        for a in outputs["aux_outputs"]])
    monkeypatch.undo()
    assert state["layer"] == n_pred  # every prediction consumed its draws
    weights = {"loss_cross_entropy": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}
    total = sum(v * next(w for n, w in weights.items() if k.startswith(n)) for k, v in ref.items())
    names = [n.replace("loss_ce", "loss_cross_entropy") for n in term_names(n_pred)]
    return total, torch.stack([ref[n] for n in names])


@pytest.mark.parametrize("ignore_pixels, images", [("skip", 3), ("negative", 6)])
def test_the_training_step_loss_matches_theirs_on_a_mixed_batch(monkeypatch, ignore_pixels, images):
    """train.step.TrainStep's loss (dense targets, batched criterion, the step's own point draw) against
    transformers' Mask2FormerLoss called once on the same mixed batch (images with both classes, hair only,
    background only), same predictions and points, gradients through our head included: the normalisation
    over the batch's masks and over its queries is theirs. Theirs has no ignore handling (ignore pixels are
    negatives of every mask): with ours ("skip") the batch holds no ignore pixels; with Mask2Former's
    ("negative") it holds crops with ignore pixels too."""
    from hairdiff.model.mask2former.batch_criterion import build_batch_criterion
    from hairdiff.model.mask2former.head import HeadConfig, Mask2FormerHead
    from hairdiff.model.mask2former.point_sampling import step_seed
    from hairdiff.train.optim import build_optimizer
    from hairdiff.train.step import TrainStep
    from tests.fixtures.stores import LEVELS, TINY, features_for

    cfg = HeadConfig(**{**TINY, "num_points": POINTS, "ignore_pixels": ignore_pixels})
    torch.manual_seed(0)
    head = Mask2FormerHead(LEVELS, cfg)
    criterion = build_batch_criterion(cfg)
    step = TrainStep(head, head, criterion, build_optimizer(head, 1e-3, 0.05), device="cpu", grad_clip=0.01,
                     global_batch=2 * images, seed=11)
    rng = np.random.default_rng(0)
    lab = mixed_batch()[:images]
    assert (lab == 255).any() == (ignore_pixels == "negative")
    feats = [features_for(x, rng) for x in lab]
    batch = {"features": {lv.name: torch.from_numpy(np.stack([f[lv.name] for f in feats])).half() for lv in LEVELS},
             "labels": torch.from_numpy(lab), "global_start": images}  # the second half of a global batch
    iteration, n_pred = 4, cfg.dec_layers + 1

    outputs, targets = step.forward(batch)
    loss, terms = step.loss(outputs, targets, iteration, batch["global_start"])
    params = [p for p in head.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)

    draws = criterion.draw(torch.Generator().manual_seed(step_seed(11, iteration)), n_pred, 2 * images)
    ref_loss, ref_terms = their_step_loss(monkeypatch, outputs, lab, draws.samples(images, 2 * images), n_pred)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=0)
    torch.testing.assert_close(terms, ref_terms.detach(), rtol=1e-5, atol=1e-7)
    ref_grads = torch.autograd.grad(ref_loss, params, allow_unused=True)
    # Summation orders differ (batched vs per image): compare at the scale of the whole gradient (a bias that
    # a GroupNorm follows has gradient 0 up to rounding, on both sides).
    scale = max(float(r.abs().max()) for r in ref_grads if r is not None)
    assert scale > 0
    for name, g, r in zip([n for n, p in head.named_parameters() if p.requires_grad], grads, ref_grads):
        if g is None or r is None:
            assert g is None and r is None, name
            continue
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5 * scale, msg=name)
