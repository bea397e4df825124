"""The model part's FLUX.2 [klein] rows: seconds per image of `KleinSampler` (diffusers' `Flux2KleinInpaintPipeline`
behind tryall's batch contract) beside the DTC's, at the same crop size and batch.

On a GPU: the public 4B architecture (benchmarks/klein_public.py) with random weights in bf16, at 4 steps without
guidance, as the distilled model runs; random weights cost what trained ones do. On CPU: the tiny random klein
(`klein-tiny`), whose figures measure the pipeline's overhead at toy size, not the public model's speed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from benchmarks import klein_public
from pipeline.model.klein import KleinBatch, KleinParams, KleinSampler
from pipeline.model.klein_build import build_tiny_klein, tiny_tokenizer

PROMPT = "Insert the sofa from the reference image into the masked area"


def public_random_klein(device: torch.device):
    """The public 4B's transformer, VAE and text encoder with random weights, built on `device` in bf16; the
    tokenizer is the tiny byte-level one (token ids stay inside the public vocabulary)."""
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinInpaintPipeline,
        Flux2Transformer2DModel,
    )
    from transformers import Qwen3Config, Qwen3ForCausalLM

    with torch.device(device):
        transformer = Flux2Transformer2DModel(**klein_public.TRANSFORMER_4B).to(torch.bfloat16)
        vae = AutoencoderKLFlux2(**klein_public.VAE).to(torch.bfloat16)
        text_encoder = Qwen3ForCausalLM(Qwen3Config(**klein_public.TEXT_ENCODER_4B)).to(torch.bfloat16)
    pipe = Flux2KleinInpaintPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**klein_public.SCHEDULER),
                                     vae=vae, text_encoder=text_encoder, tokenizer=tiny_tokenizer(),
                                     transformer=transformer, is_distilled=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def klein_batch(size: int, resolution: int, reference_size: int) -> KleinBatch:
    """Random crops with a centred square region, random references, one prompt; seeds 100 + i."""
    rng = np.random.default_rng(0)
    mask = np.zeros((size, resolution, resolution), bool)
    lo, hi = resolution // 4, 3 * resolution // 4
    mask[:, lo:hi, lo:hi] = True
    return KleinBatch(scene=rng.integers(0, 256, (size, resolution, resolution, 3), dtype=np.uint8), mask=mask,
                      reference=rng.integers(0, 256, (size, reference_size, reference_size, 3), dtype=np.uint8),
                      seeds=np.arange(100, 100 + size, dtype=np.int64), prompts=[PROMPT] * size)


def bench_klein(device: torch.device, resolution: int, batch_sizes: tuple[int, ...], repeats: int,
                steps: int = 4) -> dict[str, Any]:
    """Seconds per image at each batch size (timed like the DTC rows: `benchmarks.model._time`)."""
    from benchmarks.model import _time

    on_gpu = device.type == "cuda"
    pipe = public_random_klein(device) if on_gpu else build_tiny_klein()
    # The prompt is known up front, as in a catalogue run: encoded once, outside the timed calls.
    sampler = KleinSampler(pipe, KleinParams(steps=steps, guidance=1.0, strength=1.0), model_id="bench",
                           prompts=[PROMPT])
    rows = []
    for size in batch_sizes:
        timing = _time(sampler.generate, klein_batch(size, resolution, resolution), device, repeats)
        rows.append({"batch": size, "steps": steps, "seconds_per_image": round(timing.seconds, 4),
                     "cpu_seconds_per_image": round(timing.cpu_seconds, 4), "peak_gpu_gib": timing.peak_gib})
    return {
        "config": "public 4B architecture, random weights, bf16" if on_gpu else "klein-tiny (random), fp32",
        "resolution": resolution,
        "reference_size": resolution,
        "rows": rows,
        "note": None if on_gpu else "no GPU: the tiny klein on the CPU measures the pipeline at toy size, not the "
        "public model (benchmarks/README.md has its FLOPs and memory on paper)",
    }
