"""FLOPs, weights and GPU memory on paper: FLUX.2 [klein] through Flux2KleinInpaintPipeline, and the DTC beside it.

Every network is built on the meta device from its public config (`benchmarks.klein_public`; the DTC's
`NAMED_CONFIGS["sd15"]`) and run on meta tensors: shapes only, no weights, no timing.

- FLOPs: `torch.utils.flop_counter.FlopCounterMode`: matrix multiplies, convolutions and attention's two batched
  matmuls, 2 FLOPs per multiply-add; normalisations, activations and the scheduler's arithmetic are not counted.
- Memory: torch's `MemTracker` over the same passes, peak bytes beyond the weights. Under `inference_mode` torch
  hands each composite op (SDPA, the norms) to the tracker whole, as a GPU runs it as one kernel: attention's S x S
  scores, which a flash kernel never allocates, never appear. Each phase at batch 1 and 2 gives a fixed and a
  per-image part.

    .venv/bin/python -m benchmarks.flops                          # 512, 768, 1024 px; tables on stdout
    .venv/bin/python -m benchmarks.flops --json /tmp/flops.json   # and every figure as JSON

benchmarks/README.md ("FLUX.2 [klein] and DTC on paper") has the measured tables and how to read them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel
from torch import nn
from torch.distributed._tools.mem_tracker import MemTracker
from torch.utils.flop_counter import FlopCounterMode
from transformers import Qwen3Config, Qwen3ForCausalLM

from benchmarks import klein_public
from benchmarks.machine import describe
from pipeline.model.build import build_random, cast
from pipeline.model.configs import NAMED_CONFIGS

META = torch.device("meta")
KLEIN_DTYPE = torch.bfloat16  # FLUX.2's activations overflow fp16
DTC_DTYPE = torch.float16  # what DTCSampler runs on a GPU
MAX_SEQUENCE_LENGTH = klein_public.SAMPLING_DISTILLED["max_sequence_length"]
OUTPUT_LAYERS = klein_public.SAMPLING_DISTILLED["text_encoder_out_layers"]
PATCH = 16  # pixels per transformer token: the VAE's 8x times the pipeline's 2x2 patchify

# Dense (no sparsity) BF16/FP16 tensor-core peaks, FLOP/s, and where each figure comes from.
GPUS: dict[str, tuple[float, str]] = {
    "A10G (g5)": (70e12, "no NVIDIA datasheet for the AWS-only A10G: 70 TFLOPS BF16 as public MFU code attributes to "
                  "Baseten's A10 vs A10G comparison; NVIDIA's A10 datasheet gives the A10 125 (250 with sparsity): "
                  "unconfirmed by the vendor"),
    "L4 (g6)": (121e12, "NVIDIA L4 datasheet: FP16/BF16 Tensor Core 242 TFLOPS with sparsity"),
    "A100 SXM": (312e12, "NVIDIA A100 datasheet: BF16 Tensor Core 312 TFLOPS (624 with sparsity)"),
    "H100 SXM": (989e12, "NVIDIA H100 datasheet: BF16 Tensor Core 1,979 TFLOPS with sparsity (989.4 dense)"),
}
# g5.xlarge: what nvidia-smi reports for an A10G, less 1.5 GiB for the CUDA context, cuBLAS workspaces and the
# caching allocator's fragmentation.
A10G_TOTAL_MIB = 23028
A10G_RESERVE_MIB = 1536


@dataclass
class Klein:
    """The three networks of a klein folder, on the meta device."""

    transformer: Flux2Transformer2DModel
    text_encoder: Qwen3ForCausalLM
    vae: AutoencoderKLFlux2


def build_klein(variant: str = "4B") -> Klein:
    transformer_config, text_config = {
        "4B": (klein_public.TRANSFORMER_4B, klein_public.TEXT_ENCODER_4B),
        "9B": (klein_public.TRANSFORMER_9B, klein_public.TEXT_ENCODER_9B),
    }[variant]
    with torch.device(META):
        transformer = cast(Flux2Transformer2DModel(**transformer_config), dtype=KLEIN_DTYPE)
        text_encoder = cast(Qwen3ForCausalLM(Qwen3Config(**text_config)), dtype=KLEIN_DTYPE)
        vae = cast(AutoencoderKLFlux2(**klein_public.VAE), dtype=KLEIN_DTYPE)
    return Klein(transformer.eval(), text_encoder.eval(), vae.eval())


def _zeros(*shape: int, dtype: torch.dtype = KLEIN_DTYPE) -> torch.Tensor:
    return torch.zeros(shape, dtype=dtype, device=META)


# Each pass below is one call the pipeline makes for `batch` images, with the shapes Flux2KleinInpaintPipeline
# (diffusers 0.42.1) gives it.


def klein_text(k: Klein, batch: int) -> torch.Tensor:
    """`_get_qwen3_prompt_embeds`: every prompt padded to 512 tokens, hidden states of layers 9, 18, 27 stacked."""
    ids = _zeros(batch, MAX_SEQUENCE_LENGTH, dtype=torch.long)
    # The 4-D mask transformers would build from the 2-D one (same SDPA work): building it asks data-dependent
    # questions (is the mask all ones?) that meta tensors cannot answer.
    masks = {"full_attention": _zeros(batch, 1, MAX_SEQUENCE_LENGTH, MAX_SEQUENCE_LENGTH, dtype=torch.bool)}
    out = k.text_encoder(input_ids=ids, attention_mask=masks, output_hidden_states=True, use_cache=False)
    return torch.stack([out.hidden_states[i] for i in OUTPUT_LAYERS], dim=1)


def image_tokens(px: int, reference_px: int) -> tuple[int, int]:
    """(noisy-latent tokens, condition tokens): the condition is the encoded crop and one encoded reference."""
    latent = (px // PATCH) ** 2
    return latent, latent + (reference_px // PATCH) ** 2


def klein_step(k: Klein, batch: int, px: int, reference_px: int) -> torch.Tensor:
    """One denoising step: latents and condition latents concatenated along the sequence, 512 text tokens."""
    config = k.transformer.config
    tokens = sum(image_tokens(px, reference_px))
    return k.transformer(
        hidden_states=_zeros(batch, tokens, config.in_channels),
        encoder_hidden_states=_zeros(batch, MAX_SEQUENCE_LENGTH, config.joint_attention_dim),
        timestep=torch.full((batch,), 0.5, dtype=KLEIN_DTYPE, device=META),
        img_ids=_zeros(tokens, 4, dtype=torch.long),
        txt_ids=_zeros(MAX_SEQUENCE_LENGTH, 4, dtype=torch.long),
        return_dict=False,
    )[0]


def klein_encode(k: Klein, batch: int, px: int) -> torch.Tensor:
    return k.vae.encode(_zeros(batch, 3, px, px)).latent_dist.mode()


def klein_decode(k: Klein, batch: int, px: int) -> torch.Tensor:
    return k.vae.decode(_zeros(batch, k.vae.config.latent_channels, px // 8, px // 8)).sample


def count_flops(run: Callable[[], Any]) -> int:
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        run()
    return int(counter.get_total_flops())


def klein_flops(k: Klein, px: int, reference_px: int, steps: int) -> dict[str, Any]:
    """FLOPs per image: steps x one transformer pass (no CFG: distilled), one prompt, two VAE encodes, one decode."""
    step = count_flops(lambda: klein_step(k, 1, px, reference_px))
    text = count_flops(lambda: klein_text(k, 1))
    encode = count_flops(lambda: klein_encode(k, 1, px)) + count_flops(lambda: klein_encode(k, 1, reference_px))
    decode = count_flops(lambda: klein_decode(k, 1, px))
    latent, condition = image_tokens(px, reference_px)
    return {
        "px": px, "reference_px": reference_px, "steps": steps,
        "tokens": {"latent": latent, "condition": condition, "text": MAX_SEQUENCE_LENGTH},
        "step": step, "denoise": steps * step, "text_encoder": text, "vae_encode": encode, "vae_decode": decode,
        "other": 0,
        "per_image": steps * step + text + encode + decode,
        "per_image_shared_prompt": steps * step + encode + decode,
    }


def dtc_flops(px: int, steps: int, guidance: float) -> dict[str, Any]:
    """FLOPs per image of DTCSampler: steps x one UNet + hint-encoder pass (batch 2 under CFG), DINOv2 on the
    reference, the hint adapter, one VAE encode (the masked scene) and one decode."""
    dtc = build_random(NAMED_CONFIGS["sd15"], META, DTC_DTYPE)
    side, halves = px // dtc.vae_scale_factor, 2 if guidance > 1.0 else 1
    tokens = 1 + (dtc.image_encoder.backbone.config.image_size // dtc.image_encoder.backbone.config.patch_size) ** 2
    width = dtc.unet.config.cross_attention_dim
    step = count_flops(lambda: dtc(
        _zeros(halves, 2 * dtc.latent_channels + 1, side, side, dtype=DTC_DTYPE),
        torch.tensor(500.0, device=META), _zeros(halves, tokens, width, dtype=DTC_DTYPE),
        _zeros(halves, dtc.latent_channels, side, side, dtype=DTC_DTYPE)))
    size = dtc.image_encoder.backbone.config.image_size
    reference = count_flops(lambda: dtc.image_encoder(_zeros(1, 3, size, size, dtype=DTC_DTYPE)))
    hint = count_flops(lambda: dtc.encode_hint(_zeros(1, 3, px, px, dtype=DTC_DTYPE)))
    encode = count_flops(lambda: dtc.vae.encode(_zeros(1, 3, px, px, dtype=DTC_DTYPE)).latent_dist.mean)
    decode = count_flops(lambda: dtc.vae.decode(_zeros(1, dtc.latent_channels, side, side, dtype=DTC_DTYPE)).sample)
    per_image = steps * step + reference + hint + encode + decode
    return {
        "px": px, "latent_side": side, "batch_per_step": halves, "steps": steps, "guidance": guidance,
        "step": step, "denoise": steps * step,
        "text_encoder": 0, "vae_encode": encode, "vae_decode": decode, "other": reference + hint,
        "per_image": per_image, "per_image_shared_prompt": per_image,
        "parameters": dtc.parameter_counts(),
    }


def throughput(flops_per_image: float, mfu: float) -> dict[str, dict[str, float]]:
    """Seconds per image at the peak and at `mfu` of it, and images per hour at `mfu`, per GPU."""
    out = {}
    for gpu, (peak, _) in GPUS.items():
        seconds = flops_per_image / peak
        out[gpu] = {"s_at_peak": seconds, "s_at_mfu": seconds / mfu, "images_per_hour_at_mfu": 3600 * mfu / seconds}
    return out


def peak_activation_bytes(modules: list[nn.Module], run: Callable[[], Any]) -> int:
    """Peak bytes of the tensors `run` allocates (inputs included), beyond the modules' own weights."""
    tracker = MemTracker()
    tracker.track_external(*modules)
    # inference_mode, not no_grad: under no_grad the tracker would see SDPA's math path (the only one meta tensors
    # take) and its S x S scores.
    with tracker, torch.inference_mode():
        run()
    peak = tracker.get_tracker_snapshot("peak")[META]
    return int(peak["Total"] - peak["Parameter"] - peak["Buffer"])


def weight_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def _linear_fit(measure: Callable[[int], int]) -> dict[str, int]:
    """fixed + batch x per_image, from batches 1 and 2."""
    one, two = measure(1), measure(2)
    return {"fixed": 2 * one - two, "per_image": two - one}


def klein_memory(k: Klein, px: int, reference_px: int) -> dict[str, dict[str, int]]:
    """Activation memory of each phase the pipeline goes through, as fixed + per-image (per prompt for the text)."""
    return {
        "text_encoder": _linear_fit(lambda b: peak_activation_bytes([k.text_encoder], lambda: klein_text(k, b))),
        "vae_encode": _linear_fit(lambda b: peak_activation_bytes(
            [k.vae], lambda: klein_encode(k, b, max(px, reference_px)))),
        "denoise": _linear_fit(lambda b: peak_activation_bytes(
            [k.transformer], lambda: klein_step(k, b, px, reference_px))),
        "vae_decode": _linear_fit(lambda b: peak_activation_bytes([k.vae], lambda: klein_decode(k, b, px))),
    }


def batch_that_fits(budget: int, weights: int, phases: dict[str, dict[str, int]]) -> int:
    """The largest batch for which every phase's weights + fixed + batch x per-image stays within `budget`."""
    batch = 0
    while all(weights + p["fixed"] + (batch + 1) * p["per_image"] <= budget for p in phases.values()):
        batch += 1
    return batch


def a10g_batches(weights: dict[str, int], phases: dict[str, dict[str, int]]) -> dict[str, int]:
    """Batch size on a g5.xlarge with the text encoder kept on the GPU (prompts encoded per batch) and with it
    offloaded once the run's prompts are encoded (text phase and its weights off the GPU)."""
    budget = (A10G_TOTAL_MIB - A10G_RESERVE_MIB) * 2**20
    image_phases = {name: p for name, p in phases.items() if name != "text_encoder"}
    return {
        "text_encoder_resident": batch_that_fits(budget, sum(weights.values()), phases),
        "text_encoder_offloaded": batch_that_fits(budget, weights["transformer"] + weights["vae"], image_phases),
    }


def run(sizes: list[int], steps: int, mfu: float, variant: str, dtc_steps: int, dtc_guidance: float,
        memory: bool = True) -> dict[str, Any]:
    k = build_klein(variant)
    weights = {name: weight_bytes(getattr(k, name)) for name in ("transformer", "text_encoder", "vae")}
    report: dict[str, Any] = {
        "machine": describe(), "device": "meta (shapes only: no timing)", "variant": variant,
        "license": klein_public.LICENSES[variant], "mfu": mfu,
        "gpus": {gpu: {"peak_flops": peak, "source": source} for gpu, (peak, source) in GPUS.items()},
        "parameters": {name: sum(p.numel() for p in getattr(k, name).parameters()) for name in weights},
        "weight_bytes_bf16": weights, "klein": {}, "memory": {},
    }
    for px in sizes:
        flops = klein_flops(k, px, px, steps)
        report["klein"][str(px)] = dict(flops, throughput=throughput(flops["per_image"], mfu))
        if memory:
            phases = klein_memory(k, px, px)
            report["memory"][str(px)] = {"phases": phases, "a10g_batch": a10g_batches(weights, phases)}
    dtc = dtc_flops(512, dtc_steps, dtc_guidance)
    report["dtc"] = {"512": dict(dtc, throughput=throughput(dtc["per_image"], mfu))}
    return report


def _t(flops: float) -> str:
    return f"{flops / 1e12:.2f}"


def tables(report: dict[str, Any]) -> str:
    lines = ["| model | px | tokens (latent + condition + text) | TFLOP per step | steps | text encoder | VAE encode "
             "| VAE decode | other | per image | per image, shared prompt |", "|" + " --- |" * 11]
    rows = [(f"klein {report['variant']}", r) for r in report["klein"].values()]
    rows += [(f"DTC sd15, CFG {r['guidance']:g}", r) for r in report["dtc"].values()]
    for name, r in rows:
        tok = r.get("tokens")
        tokens = (f"{tok['latent']} + {tok['condition']} + {tok['text']}" if tok else
                  f"UNet on {r['latent_side']} x {r['latent_side']} latents, batch {r['batch_per_step']}")
        lines.append(f"| {name} | {r['px']} | {tokens} | {_t(r['step'])} | {r['steps']} | {_t(r['text_encoder'])} | "
                     f"{_t(r['vae_encode'])} | {_t(r['vae_decode'])} | {_t(r['other'])} | {_t(r['per_image'])} | "
                     f"{_t(r['per_image_shared_prompt'])} |")
    mfu = report["mfu"]
    lines += ["", f"| model | px | GPU | s per image at peak | s per image at {mfu:.0%} MFU | images/hour at "
              f"{mfu:.0%} MFU |", "|" + " --- |" * 6]
    for name, r in rows:
        for gpu, t in r["throughput"].items():
            lines.append(f"| {name} | {r['px']} | {gpu} | {t['s_at_peak']:.2f} | {t['s_at_mfu']:.2f} | "
                         f"{t['images_per_hour_at_mfu']:,.0f} |")
    lines += ["", "| component | parameters | bf16 GiB |", "| --- | --- | --- |"]
    for name, count in report["parameters"].items():
        lines.append(f"| {name} | {count / 1e9:.3f} B | {report['weight_bytes_bf16'][name] / 2**30:.2f} |")
    if report["memory"]:
        lines += ["", "| px | phase | fixed MiB | per image MiB (text: per prompt) |", "| --- | --- | --- | --- |"]
        for px, m in report["memory"].items():
            for phase, p in m["phases"].items():
                lines.append(f"| {px} | {phase} | {p['fixed'] / 2**20:.0f} | {p['per_image'] / 2**20:.0f} |")
        lines += ["", "| px | A10G batch, text encoder resident | A10G batch, text encoder offloaded |",
                  "| --- | --- | --- |"]
        for px, m in report["memory"].items():
            b = m["a10g_batch"]
            lines.append(f"| {px} | {b['text_encoder_resident']} | {b['text_encoder_offloaded']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="512,768,1024", help="crop sizes in px (the reference at the same size)")
    parser.add_argument("--steps", type=int, default=klein_public.SAMPLING_DISTILLED["num_inference_steps"])
    parser.add_argument("--variant", choices=("4B", "9B"), default="4B")
    parser.add_argument("--mfu", type=float, default=0.4, help="the realistic share of the peak to quote")
    parser.add_argument("--dtc-steps", type=int, default=40)
    parser.add_argument("--dtc-guidance", type=float, default=5.0)
    parser.add_argument("--no-memory", action="store_true", help="FLOPs only (the memory passes take longer)")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    report = run(sizes, args.steps, args.mfu, args.variant, args.dtc_steps, args.dtc_guidance, not args.no_memory)
    print(tables(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
