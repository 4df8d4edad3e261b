"""Build a random-weight model with the real SD 1.x configs, saved like a checkpoint (for sizes and costs only).

    python bench/build_sd1_random.py OUT_DIR
"""
import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
__import__("pipeline").use_checkout()
from hairdiff.extract.tiny import tiny_model_path  # noqa: E402

out = Path(sys.argv[1])
# --half: save float16 weights (half the bytes to write and load; the benchmarks run in float16 anyway)
half = "--half" in sys.argv[2:]
torch.manual_seed(0)
unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8, sample_size=64)
vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                    up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512, scaling_factor=0.18215)
tiny = tiny_model_path()
tok = CLIPTokenizer.from_pretrained(tiny, subfolder="tokenizer")
text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                    num_attention_heads=12, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1))
for name, m in (("unet", unet), ("vae", vae), ("text_encoder", text), ("tokenizer", tok)):
    if half and hasattr(m, "half"):
        m.half()
    m.save_pretrained(out / name)
DDPMScheduler.from_pretrained(tiny, subfolder="scheduler").save_pretrained(out / "scheduler")
(out / "model_index.json").write_text((tiny / "model_index.json").read_text())
print(sum(p.numel() for p in unet.parameters()) / 1e6, "M unet params")
