"""The frozen backbone: the tiny model's build and reload, and the errors for models that cannot be found."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from hairdiff.core.errors import ModelNotFoundError
from hairdiff.extract.backbone import load_backbone
from hairdiff.extract.tiny import build_tiny_model, tiny_model_path


@pytest.fixture(scope="module")
def tiny():
    return load_backbone("tiny", device="cpu")


def _state(module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_tiny_is_a_diffusers_folder_built_once(tiny):
    path = tiny_model_path()
    assert path.name == "tiny-sd-v1" and path.parent.name == "models"
    for sub in ("model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (path / sub).exists(), sub
    before = (path / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert tiny_model_path() == path
    assert (path / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == before
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tiny-sd-v1-")], "temp build left behind"


def test_tiny_has_sd_architecture(tiny):
    u, v = tiny.unet.config, tiny.vae.config
    assert list(u.down_block_types) == ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]
    assert list(u.up_block_types) == ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3
    assert all(len(b.resnets) == 3 for b in tiny.unet.up_blocks)
    assert u.cross_attention_dim == tiny.text_encoder.config.hidden_size
    assert v.latent_channels == 4 and v.scaling_factor == pytest.approx(0.18215)
    assert 2 ** (len(v.block_out_channels) - 1) == 8
    s = tiny.scheduler.config
    assert (s.num_train_timesteps, s.beta_start, s.beta_end, s.beta_schedule) == (1000, 0.00085, 0.012,
                                                                                  "scaled_linear")


def test_reload_same_weights_and_same_path_as_local_folder(tiny, tmp_path):
    local = load_backbone(str(tiny_model_path()), device="cpu")
    for name in ("unet", "vae", "text_encoder"):
        assert _same(_state(getattr(tiny, name)), _state(getattr(local, name))), name
    # the same bytes give the same content hash whichever way the folder is named
    assert tiny.identity["content_sha256"] == local.identity["content_sha256"]
    assert tiny.identity["kind"] == "tiny" and local.identity["kind"] == "local"
    # the build is deterministic: a second build elsewhere has identical weights
    build_tiny_model(tmp_path / "again")
    again = load_backbone(str(tmp_path / "again"), device="cpu")
    assert _same(_state(tiny.unet), _state(again.unet)) and _same(_state(tiny.vae), _state(again.vae))
    assert again.identity["content_sha256"] == tiny.identity["content_sha256"]


def test_frozen_eval_and_float32_on_cpu(tiny):
    assert tiny.dtype == torch.float32 and tiny.device == torch.device("cpu")
    for m in (tiny.unet, tiny.vae, tiny.text_encoder):
        assert not m.training
        assert not any(p.requires_grad for p in m.parameters())
        assert all(p.dtype == torch.float32 for p in m.parameters())


def test_explicit_dtype():
    bb = load_backbone("tiny", device="cpu", dtype=torch.bfloat16)
    assert bb.dtype == torch.bfloat16 and next(bb.unet.parameters()).dtype == torch.bfloat16


def test_content_hash_is_memoised_by_path_size_mtime(tiny):
    from hairdiff.core.paths import models_dir

    memo = json.loads((models_dir() / "content-hashes.json").read_text())
    weights = (tiny_model_path() / "unet" / "diffusion_pytorch_model.safetensors").resolve()
    assert any(k.startswith(f"{weights}:") for k in memo)


def test_tokenizer_handles_any_text(tiny):
    tok = tiny.tokenizer
    assert tok.tokenize("A photo of a hair.") == ["a</w>", "photo</w>", "of</w>", "a</w>", "hair</w>", ".</w>"]
    ids = tok("Zebra! naïve 日本 ✂", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and tok.unk_token_id not in ids[1:ids.index(tok.eos_token_id)]
    assert tok.decode(tok("curly hair").input_ids, skip_special_tokens=True).strip() == "curly hair"


def _one_line(err: ModelNotFoundError, model: str):
    msg = str(err)
    assert "\n" not in msg
    assert model in msg and "--model" in msg and "tiny" in msg


@pytest.mark.parametrize("model", ["/no/such/folder/sd-v1-3", "./missing-dir/sd", "missing/model.safetensors",
                                   "missing.ckpt"])
def test_missing_path_is_one_line_error(model):
    with pytest.raises(ModelNotFoundError) as e:
        load_backbone(model)
    _one_line(e.value, model)


def test_missing_hub_id_is_one_line_error():
    # no network here: the hub is unreachable and the id is not in the local HF cache
    with pytest.raises(ModelNotFoundError) as e:
        load_backbone("no-such-org/no-such-model")
    _one_line(e.value, "no-such-org/no-such-model")


def test_folder_that_is_not_a_model_is_one_line_error(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelNotFoundError) as e:
        load_backbone(str(tmp_path))
    _one_line(e.value, str(tmp_path))


def test_single_file_offline_says_it_needs_a_config(tmp_path):
    f = tmp_path / "sd.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)}, str(f))
    with pytest.raises(ModelNotFoundError) as e:
        load_backbone(str(f))
    msg = str(e.value)
    assert "\n" not in msg and str(f) in msg and "offline" in msg and "--model" in msg
