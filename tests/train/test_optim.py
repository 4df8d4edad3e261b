"""AdamW parameter groups as Mask2Former's build_optimizer makes them: no decay on norms and embeddings."""
from __future__ import annotations

import torch
from torch import nn

from hairdiff.model.mask2former.head import Mask2FormerHead
from hairdiff.train.optim import build_optimizer, param_groups
from tests.fixtures.stores import LEVELS, TINY_HEAD


def _names(model: nn.Module, params) -> set[str]:
    ids = {id(p) for p in params}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_norms_and_embeddings_get_no_weight_decay():
    head = Mask2FormerHead(LEVELS, TINY_HEAD)
    decay, no_decay = param_groups(head, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    # What Mask2Former's rule exempts, written out from the module types (not from the code under test).
    exempt = {f"{m}.{p}" if m else p for m, mod in head.named_modules()
              if isinstance(mod, (nn.GroupNorm, nn.LayerNorm, nn.Embedding))
              for p, _ in mod.named_parameters(recurse=False)}
    assert _names(head, no_decay["params"]) == exempt
    assert _names(head, decay["params"]) == {n for n, _ in head.named_parameters()} - exempt
    # Spot checks of each kind: GroupNorm (adapter), LayerNorm (decoder), Embedding (queries) are exempt; conv and
    # linear biases and the pixel decoder's plain level_embed parameter decay, as in Mask2Former.
    for name in ("adapter.proj.up_blocks_1.1.weight", "adapter.proj.up_blocks_1.1.bias",
                 "predictor.layers.0.norm_cross.weight", "predictor.query_feat.weight",
                 "predictor.level_embed.weight", "predictor.decoder_norm.bias"):
        assert name in exempt, name
    for name in ("adapter.proj.up_blocks_1.0.bias", "pixel_decoder.level_embed", "predictor.class_embed.bias",
                 "predictor.layers.0.linear1.weight"):
        assert name not in exempt and name in _names(head, decay["params"]), name
    # Every trainable parameter exactly once.
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(head.parameters()))


def test_one_step_decays_only_the_decayed_group():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Embedding(3, 4))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(model, lr=0.1, weight_decay=0.5)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # zero gradient: AdamW moves a parameter by its weight decay only
    opt.step()
    after = dict(model.named_parameters())
    for name in ("0.weight", "0.bias"):
        torch.testing.assert_close(after[name].detach(), before[name] * (1 - 0.1 * 0.5))
    for name in ("1.weight", "1.bias", "2.weight"):
        assert torch.equal(after[name].detach(), before[name]), name
