"""The public configs of FLUX.2 [klein] (Black Forest Labs), as plain dicts, each with where it came from.

There is no network to the model hub here: every value below was read from a public source named in `SOURCES`, and
those not seen in the model folder itself are listed in `UNCONFIRMED` (benchmarks/README.md repeats the list).
`benchmarks.flops` builds the modules from these dicts on the meta device; the keys are the constructors' own
(`Flux2Transformer2DModel`, `AutoencoderKLFlux2`, transformers' `Qwen3Config`), so a dict is a `config.json` minus
its bookkeeping keys.
"""

from __future__ import annotations

from typing import Any

REPO_4B = "black-forest-labs/FLUX.2-klein-4B"
REPO_9B = "black-forest-labs/FLUX.2-klein-9B"

LICENSES = {"4B": "apache-2.0", "9B": "FLUX Non-Commercial License"}

MODEL_INDEX_4B: dict[str, Any] = {
    "_class_name": "Flux2KleinPipeline",
    # True: the pipeline never runs classifier-free guidance, whatever guidance_scale says.
    "is_distilled": True,
    "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    "text_encoder": ["transformers", "Qwen3ForCausalLM"],
    "tokenizer": ["transformers", "Qwen2TokenizerFast"],
    "transformer": ["diffusers", "Flux2Transformer2DModel"],
    "vae": ["diffusers", "AutoencoderKLFlux2"],
}

TRANSFORMER_4B: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 128,
    "num_layers": 5,
    "num_single_layers": 20,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 7680,
    "timestep_guidance_channels": 256,
    "mlp_ratio": 3.0,
    "axes_dims_rope": (32, 32, 32, 32),
    "rope_theta": 2000,
    "eps": 1e-6,
    "guidance_embeds": False,
}

TRANSFORMER_9B: dict[str, Any] = dict(
    TRANSFORMER_4B, num_layers=8, num_single_layers=24, num_attention_heads=32, joint_attention_dim=12288
)

# One VAE for the whole FLUX.2 family: AutoencoderKLFlux2's defaults.
VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 32,
    "norm_num_groups": 32,
    "sample_size": 1024,
    "use_quant_conv": True,
    "use_post_quant_conv": True,
    "mid_block_add_attention": True,
    "batch_norm_eps": 1e-4,
    "batch_norm_momentum": 0.1,
    "patch_size": [2, 2],
}

# Qwen3-4B (Qwen3ForCausalLM, tied embeddings); joint_attention_dim 7680 = 3 output layers x 2560.
TEXT_ENCODER_4B: dict[str, Any] = {
    "vocab_size": 151936,
    "hidden_size": 2560,
    "intermediate_size": 9728,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "hidden_act": "silu",
    "max_position_embeddings": 40960,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000,
    "attention_bias": False,
    "tie_word_embeddings": True,
}

# Qwen3-8B (untied embeddings); 12288 = 3 x 4096.
TEXT_ENCODER_9B: dict[str, Any] = dict(
    TEXT_ENCODER_4B, hidden_size=4096, intermediate_size=12288, tie_word_embeddings=False
)

# FLUX.2 [dev]'s scheduler; flow-matching Euler, one transformer pass per step whatever the shift.
SCHEDULER: dict[str, Any] = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "time_shift_type": "exponential",
}

# How the distilled models are sampled, and what Flux2KleinInpaintPipeline.__call__ does with a prompt. The pipeline's
# own defaults are num_inference_steps=50, guidance_scale=8.0, strength=0.8: a caller must pass 4 steps.
SAMPLING_DISTILLED: dict[str, Any] = {
    "num_inference_steps": 4,
    "guidance_scale": 1.0,
    "max_sequence_length": 512,
    "text_encoder_out_layers": (9, 18, 27),
}

SOURCES: dict[str, str] = {
    "LICENSES": "black-forest-labs/flux2 README, model table (FLUX.2 [klein] 4B and 4B Base apache-2.0; 9B, 9B KV "
    "and 9B Base FLUX Non-Commercial License); the same split on BFL's partners' pages (Vercel AI Gateway, Floyo)",
    "MODEL_INDEX_4B": "huggingface.co/black-forest-labs/FLUX.2-klein-4B/blob/main/model_index.json (as quoted by the "
    "hub's file page: _diffusers_version 0.37.0.dev0, is_distilled true, the six components above)",
    "TRANSFORMER_4B": "diffusers scripts/convert_flux2_to_diffusers.py, get_flux2_transformer_config('klein-4b') "
    "(huggingface/diffusers 58eb52c); checked against the repo's single-file flux-2-klein-4b.safetensors, 7.75 GB = "
    "3.876e9 bf16 parameters, what the meta-built module has; antirez/flux2.c README (reads transformer/config.json): "
    "5 double + 20 single blocks, 3072 hidden, 24 heads",
    "TRANSFORMER_9B": "the same script, get_flux2_transformer_config('klein-9b'); a public test quoting the 9B's "
    "transformer/config.json (num_layers 8, num_single_layers 24, 32 heads, joint_attention_dim 12288)",
    "VAE": "AutoencoderKLFlux2's defaults in diffusers 0.42.1 (the conversion script builds the FLUX.2 VAE with "
    "AutoencoderKLFlux2()); third-party copies of vae/config.json (block_out_channels [128, 256, 512, 512], "
    "latent_channels 32, patch_size [2, 2], batch_norm_eps 1e-4); a FLUX.2-klein-4B mirror's vae safetensors, 168 MB "
    "= 84.05e6 bf16 parameters, what the meta-built VAE has",
    "TEXT_ENCODER_4B": "Qwen/Qwen3-4B config.json (as copied by fine-tunes on the hub); the klein folder's "
    "text_encoder/ is 8.05 GB (hub tree page) = 4.022e9 bf16 parameters, Qwen3-4B with tied embeddings exactly; "
    "hidden_size 2560, head_dim 128 and Qwen3ForCausalLM seen in a copy of its text_encoder/config.json; "
    "antirez/flux2.c's flux_qwen3.h (from text_encoder/config.json): 2560, 9728, 32 heads, 8 KV heads, 36 layers",
    "TEXT_ENCODER_9B": "Qwen/Qwen3-8B config.json (copied on the hub); BFL: '9B flow model with 8B Qwen3 text "
    "embedder' (FLUX.2-klein-9b-kv model card)",
    "SCHEDULER": "FLUX.2 [dev]'s scheduler/scheduler_config.json (diffusers/FLUX.2-dev-bnb-4bit copy); not seen for "
    "klein",
    "SAMPLING_DISTILLED": "4 steps and guidance 1.0 for the distilled klein: BFL (step-distilled to 4 inference "
    "steps), antirez/flux2.c README (4 steps, guidance 1.0 distilled / 50 steps, 4.0 base), mirrors of the model card "
    "('4 steps, guidance_scale=1.0'); 512 tokens and layers (9, 18, 27): Flux2KleinInpaintPipeline in diffusers "
    "0.42.1 (tokenizer padding='max_length', so every prompt is 512 tokens)",
}

UNCONFIRMED: tuple[str, ...] = (
    "TEXT_ENCODER_4B: num_attention_heads 32, num_key_value_heads 8, intermediate_size 9728 are Qwen3-4B's, not read "
    "from the klein folder's own text_encoder/config.json (its folder size agrees; one third-party architecture "
    "note says 20 heads / 4 KV heads / 6912, which would be a 2.9e9-parameter model and disagrees with the 8.05 GB)",
    "TEXT_ENCODER_9B: Qwen/Qwen3-8B's config, not the 9B folder's own text_encoder/config.json",
    "TRANSFORMER_9B: from the conversion script and a quoted config, not checked against a checkpoint size",
    "VAE: the klein folders' vae/config.json not read itself (third-party copies and the 168 MB file agree)",
    "SCHEDULER: FLUX.2 [dev]'s config; klein's scheduler_config.json not seen (no effect on FLOPs or memory)",
    "SAMPLING_DISTILLED: BFL's Hugging Face model card not read itself (4 steps / guidance 1.0 from BFL's "
    "description, an independent implementation and mirrors of the card)",
)
