"""A tiny random-weight model of the Stable Diffusion 1.x architecture family, for tests and the demo.

It is built deterministically from configs (same block types as SD 1.x: cross-attention down/up blocks,
three resnets per up block, an 8x-downsampling VAE with a 4-channel latent, a CLIP text encoder and a CLIP
BPE tokenizer), saved with `save_pretrained` as an ordinary diffusers folder, and from then on loaded by
exactly the code that loads a real checkpoint.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

VERSION = "tiny-sd-v1"
# The tokenizer's words: merges are learnt for these; everything else falls back to byte-level pieces.
WORDS = ["a", "photo", "of", "hair", "the", "cat", "dog", "face", "person", "portrait", "curly", "long", "short"]


def tiny_model_path() -> Path:
    from hairdiff.core.paths import models_dir

    target = models_dir() / VERSION
    if (target / "model_index.json").exists():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{VERSION}-", dir=target.parent))
    except OSError as e:  # built on first use: its folder must be writable then
        from hairdiff.core.errors import UsageError

        raise UsageError(f"cannot build the tiny model in {target.parent} ({e.strerror or e}): set HAIRDIFF_MODELS "
                         "to a writable folder") from None
    try:
        build_tiny_model(tmp)
        try:
            os.rename(tmp, target)  # atomic: a concurrent first use either sees nothing or the whole model
        except OSError:
            if not (target / "model_index.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _tokenizer():
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in alphabet:
        vocab.setdefault(ch, len(vocab))
    for ch in alphabet:
        vocab.setdefault(ch + "</w>", len(vocab))
    merges = []
    for word in WORDS:  # merge left to right: h+a, ha+i, hai+r</w>
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            if pair not in merges:
                merges.append(pair)
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
            vocab.setdefault(pieces[0], len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77), len(vocab)


def build_tiny_model(path: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    from transformers.utils import logging as tlog

    tlog.disable_progress_bar()  # a one-shard "Writing model shards" bar is noise in CLI output
    torch.manual_seed(0)
    tokenizer, vocab_size = _tokenizer()
    text = CLIPTextModel(CLIPTextConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                                        bos_token_id=0, eos_token_id=1, pad_token_id=1))
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(16, 16, 32, 32),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(8, 8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8,
        sample_size=64, scaling_factor=0.18215,
    )
    # The SD 1.x training schedule: it sets how much noise "timestep t" means.
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", clip_sample=False)
    path = Path(path)
    for name, module in (("unet", unet), ("vae", vae), ("text_encoder", text), ("tokenizer", tokenizer),
                         ("scheduler", scheduler)):
        module.save_pretrained(path / name)
    (path / "model_index.json").write_text(
        '{"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1", "hairdiff": "%s",\n'
        ' "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],\n'
        ' "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],\n'
        ' "scheduler": ["diffusers", "DDPMScheduler"]}\n' % VERSION)
