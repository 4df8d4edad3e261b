"""Tap sets and the hooked extractor, checked against plain diffusers forwards computed here independently."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hairdiff.cache.levels import LevelSpec
from hairdiff.core.errors import UsageError
from hairdiff.extract.backbone import Backbone, load_backbone
from hairdiff.extract.features import FeatureExtractor
from hairdiff.extract.flops import count_flops
from hairdiff.extract.taps import ODISE, resolve_taps

R = 64  # tiny images: latent 8x8
# the reference does the noise schedule in float64 and the batch differs: float32 rounding only
TOL = dict(rtol=1e-3, atol=1e-4)


@pytest.fixture(scope="module")
def bb():
    return load_backbone("tiny", device="cpu")


@pytest.fixture(scope="module")
def unet_fx(bb):
    return FeatureExtractor(bb, resolve_taps("unet", bb), resolution=R)


@pytest.fixture(scope="module")
def odise_fx(bb):
    return FeatureExtractor(bb, resolve_taps("odise", bb), resolution=R)


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return torch.rand((2, 3, R, R), generator=g) * 2 - 1


def _reference(bb, images, names, *, prompt="A photo of a hair.", timestep=0, seed=0):
    """A full, un-stopped diffusers forward with plain hooks; the noise schedule computed by hand."""
    grabbed, hooks = {}, []
    for name in names:
        path, _, kind = name.partition(":")
        root, _, sub = path.partition(".")
        mod = (bb.unet if root == "unet" else bb.vae).get_submodule(sub)
        if kind == "input":
            hooks.append(mod.register_forward_pre_hook(lambda m, a, n=name: grabbed.__setitem__(n, a[0].clone())))
        else:
            hooks.append(mod.register_forward_hook(lambda m, a, o, n=name: grabbed.__setitem__(n, o.clone())))
    try:
        with torch.no_grad():
            ids = bb.tokenizer(prompt, padding="max_length", max_length=77, return_tensors="pt").input_ids
            text = bb.text_encoder(ids).last_hidden_state
            z = bb.vae.encode(images).latent_dist.mean * 0.18215
            betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
            abar = torch.cumprod(1 - betas, 0)[timestep]
            eps = torch.randn((1, 4, R // 8, R // 8), generator=torch.Generator().manual_seed(seed))
            zt = (abar.sqrt() * z + (1 - abar).sqrt() * eps).float()
            b = images.shape[0]
            bb.unet(zt, torch.full((b,), timestep), encoder_hidden_states=text.expand(b, -1, -1))
            bb.vae.decode(z / 0.18215)
    finally:
        for h in hooks:
            h.remove()
    return grabbed


def test_unet_taps_equal_direct_diffusers_forward(bb, images, unet_fx):
    fx = unet_fx
    got = fx(images)
    ref = _reference(bb, images, [t.name for t in fx.taps])
    assert list(got) == ["unet.up_blocks.0", "unet.up_blocks.1", "unet.up_blocks.2", "unet.up_blocks.3"]
    for name, want in ref.items():
        assert got[name].shape == want.shape
        torch.testing.assert_close(got[name], want, **TOL)
    assert [t.stride for t in fx.taps] == [32, 16, 8, 8]
    assert [t.channels for t in fx.taps] == [c.shape[1] for c in ref.values()]


def test_odise_taps_equal_direct_forward_and_have_odise_strides(bb, images, odise_fx):
    fx = odise_fx
    got = fx(images)
    ref = _reference(bb, images, ODISE)
    assert list(got) == ODISE
    for name in ODISE:
        torch.testing.assert_close(got[name], ref[name], **TOL)
    assert [t.stride for t in fx.taps] == [4, 8, 64, 32, 16, 8, 8, 4]
    assert all(t.kind == "input" for t in fx.taps)
    assert [t.network for t in fx.taps] == ["vae_encoder"] * 2 + ["unet"] * 4 + ["vae_decoder"] * 2


def _calls(modules):
    count = {"n": 0}
    hooks = [m.register_forward_hook(lambda *a: count.__setitem__("n", count["n"] + 1)) for m in modules]
    return count, hooks


def test_networks_stop_after_their_last_tap(bb, images, unet_fx, odise_fx):
    # (built by the fixtures: construction does an un-stopped dry run to measure the taps)
    unet = unet_fx
    odise = odise_fx
    # unet taps: nothing after up_blocks[3] runs, the decoder never runs
    count, hooks = _calls([bb.unet.conv_norm_out, bb.unet.conv_out, bb.vae.decoder])
    unet(images)
    for h in hooks:
        h.remove()
    # odise: the UNet stops inside up_blocks[3], the decoder inside up_blocks[1]
    c2, h2 = _calls([bb.unet.up_blocks[3].resnets[2], bb.unet.conv_out, bb.vae.decoder.up_blocks[1].resnets[2],
                     bb.vae.decoder.up_blocks[2], bb.vae.decoder.conv_out])
    c3, h3 = _calls([bb.vae.decoder.up_blocks[1].resnets[1], bb.unet.up_blocks[3].resnets[1]])
    odise(images)
    for h in h2 + h3:
        h.remove()
    assert count["n"] == 0 and c2["n"] == 0
    assert c3["n"] == 2  # both did run up to their last tap


def test_batch_of_two_equals_two_batches_of_one(bb, images, odise_fx):
    fx = odise_fx
    both = fx(images)
    one, two = fx(images[:1]), fx(images[1:])
    for name, v in both.items():
        torch.testing.assert_close(v[:1], one[name], **TOL)
        torch.testing.assert_close(v[1:], two[name], **TOL)


def test_same_settings_same_features_and_fingerprint(bb, images, unet_fx):
    a = unet_fx
    b = FeatureExtractor(bb, resolve_taps("unet", bb), resolution=R)
    assert a.fingerprint_inputs == b.fingerprint_inputs
    fa, fb = a(images), b(images)
    assert all(torch.equal(fa[k], fb[k]) for k in fa)


@pytest.mark.parametrize("change", [{"prompt": "A photo of a cat."}, {"timestep": 261}, {"seed": 1}])
def test_prompt_timestep_seed_change_features_and_fingerprint(bb, images, unet_fx, change):
    base = unet_fx
    other = FeatureExtractor(bb, resolve_taps("unet", bb), resolution=R, **change)
    assert other.fingerprint_inputs != base.fingerprint_inputs
    f0, f1 = base(images), other(images)
    assert not torch.allclose(f0["unet.up_blocks.3"], f1["unet.up_blocks.3"])
    # and the changed extractor still equals a direct forward with the changed settings
    ref = _reference(bb, images, ["unet.up_blocks.3"], **change)
    torch.testing.assert_close(f1["unet.up_blocks.3"], ref["unet.up_blocks.3"], **TOL)


def test_fingerprint_inputs_content(bb, odise_fx):
    fi = odise_fx.fingerprint_inputs
    assert fi["model"] == bb.identity and fi["prompt"] == "A photo of a hair." and fi["timestep"] == 0
    assert fi["resolution"] == R and fi["compute_dtype"] == "float32" and fi["noise"]["seed"] == 0
    assert fi["taps"] == ODISE and "mean" in fi["latent"]


def test_levels_describe_the_features(bb, images, odise_fx):
    fx = odise_fx
    feats = fx(images)
    assert all(isinstance(lv, LevelSpec) for lv in fx.levels)
    assert [(lv.name, lv.channels, lv.height, lv.width) for lv in fx.levels] == \
        [(k, v.shape[1], v.shape[2], v.shape[3]) for k, v in feats.items()]


def test_custom_tap_list_and_bad_names(bb, images):
    taps = resolve_taps("unet.up_blocks.1, vae.encoder.down_blocks.2.resnets.1:input", bb)
    assert [(t.network, t.kind) for t in taps] == [("unet", "output"), ("vae_encoder", "input")]
    fx = FeatureExtractor(bb, taps, resolution=R)
    assert [t.stride for t in fx.taps] == [16, 4]
    with pytest.raises(UsageError, match="unet.up_blocks.9"):
        resolve_taps("unet.up_blocks.9", bb)
    with pytest.raises(UsageError, match="text_encoder"):
        resolve_taps("text_encoder.x", bb)
    with pytest.raises(UsageError, match="input"):
        resolve_taps("unet.up_blocks.1:inptu", bb)
    with pytest.raises(UsageError, match="multiple of 64"):
        FeatureExtractor(bb, taps, resolution=100)


def test_flops_split_by_network_and_only_work_done(bb, unet_fx, odise_fx):
    fu, fo = count_flops(unet_fx), count_flops(odise_fx)
    assert fu["vae_decoder"] == 0 < fo["vae_decoder"]
    for f in (fu, fo):
        assert f["vae_encoder"] > 0 and f["unet"] > 0
        assert f["vae_encoder"] + f["unet"] + f["vae_decoder"] == f["total"]
    assert count_flops(unet_fx, batch_size=2)["total"] == 2 * fu["total"]
    # an un-stopped UNet and decoder cost more than what the extractor runs
    x = torch.zeros((1, 4, R // 8, R // 8))
    with FlopCounterMode(display=False) as full_unet, torch.no_grad():
        bb.unet(x, torch.zeros(1, dtype=torch.long), encoder_hidden_states=unet_fx.prompt_embedding)
    with FlopCounterMode(display=False) as full_dec, torch.no_grad():
        bb.vae.decode(x)
    assert fo["unet"] < fu["unet"] <= full_unet.get_total_flops()
    assert fo["vae_decoder"] < full_dec.get_total_flops()


def _sd1_on_meta() -> Backbone:
    """The real SD 1.x architecture (diffusers' default UNet config with 768-d cross-attention, the SD VAE, a
    768-d CLIP text encoder) on the meta device: true shapes and FLOPs, no weights, no download."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = load_backbone("tiny").tokenizer
    with torch.device("meta"):
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2,
                            sample_size=512, scaling_factor=0.18215)
        text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=3072,
                                            num_hidden_layers=1, num_attention_heads=12, max_position_embeddings=77,
                                            bos_token_id=0, eos_token_id=1, pad_token_id=1))
    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    return Backbone(unet.eval(), vae.eval(), text.eval(), tok, sched, {"kind": "test"}, torch.device("meta"),
                    torch.float32)


def test_real_sd1_shapes_and_flops_match_facts():
    sd = _sd1_on_meta()
    unet = FeatureExtractor(sd, resolve_taps("unet", sd), resolution=512)
    assert [(lv.channels, lv.height, lv.stride) for lv in unet.levels] == \
        [(1280, 16, 32), (1280, 32, 16), (640, 64, 8), (320, 64, 8)]
    odise = FeatureExtractor(sd, resolve_taps("odise", sd), resolution=512)
    assert [(lv.channels, lv.stride) for lv in odise.levels] == \
        [(512, 4), (512, 8), (2560, 64), (1920, 32), (960, 16), (640, 8), (512, 8), (512, 4)]
    assert sum(lv.channels * lv.height * lv.width for lv in odise.levels) == pytest.approx(25.2e6, rel=2e-3)
    f = count_flops(unet)
    assert f["vae_encoder"] == pytest.approx(1.117e12, rel=1e-3)
    assert f["unet"] == pytest.approx(0.803e12, rel=1e-2)  # minus conv_norm_out/conv_out, which never run
    assert f["vae_decoder"] == 0
    assert 0 < count_flops(odise)["vae_decoder"] < 2.515e12
