"""A tiny FLUX.2 [klein] pipeline with seeded random weights: the public architecture (Qwen3 text encoder read at
layers 9, 18 and 27, the FLUX.2 transformer, the FLUX.2 VAE with its latent batch norm, flow-matching scheduler) at a
size that runs in seconds on one CPU core. No hub: the tokenizer is a byte-level BPE built here (every byte a token,
no merges) with Qwen's chat template, so prompts go through exactly the code path the public tokenizer takes.

`save_klein` writes the public folder's layout (model_index.json, transformer/, vae/, text_encoder/ sharded with its
index, tokenizer/, scheduler/), which is what `model.source` takes for a real klein.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLFlux2,
    FlowMatchEulerDiscreteScheduler,
    Flux2KleinInpaintPipeline,
    Flux2Transformer2DModel,
)
from tokenizers.pre_tokenizers import ByteLevel
from transformers import Qwen2TokenizerFast, Qwen3Config, Qwen3ForCausalLM

# Qwen's chat format, as the public tokenizer's template renders one user turn (thinking off).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n\n</think>\n\n{% endif %}"
)
# The pipeline reads the text encoder's hidden states 9, 18 and 27: the tiny encoder has 28 layers of width 16.
TEXT_LAYERS, TEXT_WIDTH = 28, 16
OUT_LAYERS = 3
LATENT_CHANNELS = 2
# The public scheduler's settings (dynamic shifting, as the pipeline's `mu` expects).
SCHEDULER_CONFIG = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True}
# Text shards: the public folder shards its text encoder; so does the tiny one, so the index path is exercised.
TEXT_SHARD_SIZE = "100KB"


def tiny_tokenizer() -> Qwen2TokenizerFast:
    """A byte-level BPE over the 256 byte symbols with Qwen's special tokens and chat template."""
    vocab = {symbol: i for i, symbol in enumerate(sorted(ByteLevel.alphabet()))}
    tokenizer = Qwen2TokenizerFast(vocab=vocab, merges=[], unk_token=None, bos_token=None, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_klein(seed: int = 0) -> Flux2KleinInpaintPipeline:
    """The tiny random klein (fp32, CPU), step-distilled like the public 4B: the same weights for the same seed."""
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    text_encoder = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=TEXT_WIDTH, intermediate_size=32, num_hidden_layers=TEXT_LAYERS,
        num_attention_heads=2, num_key_value_heads=2, head_dim=8, max_position_embeddings=1024,
        tie_word_embeddings=True,
    ))
    torch.manual_seed(seed + 1)
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=LATENT_CHANNELS * 4, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=TEXT_WIDTH * OUT_LAYERS, timestep_guidance_channels=32,
        axes_dims_rope=(4, 4, 4, 4), guidance_embeds=False,
    )
    torch.manual_seed(seed + 2)
    vae = AutoencoderKLFlux2(
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(8, 16), layers_per_block=1,
        latent_channels=LATENT_CHANNELS, norm_num_groups=4, sample_size=64, use_quant_conv=False,
        use_post_quant_conv=False,
    )
    pipe = Flux2KleinInpaintPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG), vae=vae, text_encoder=text_encoder,
        tokenizer=tokenizer, transformer=transformer, is_distilled=True,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_klein(pipe: Flux2KleinInpaintPipeline, path: str | Path) -> Path:
    """The public folder layout: safetensors only, the text encoder in shards with its index, model_index.json
    naming Flux2KleinPipeline as the public folders do."""
    path = Path(path)
    pipe.save_pretrained(path, safe_serialization=True)
    shutil.rmtree(path / "text_encoder")  # written again in shards, as the public folder holds it
    pipe.text_encoder.save_pretrained(path / "text_encoder", safe_serialization=True, max_shard_size=TEXT_SHARD_SIZE)
    index_path = path / "model_index.json"
    index = json.loads(index_path.read_text())
    index["_class_name"] = "Flux2KleinPipeline"
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    return path
