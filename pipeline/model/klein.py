"""FLUX.2 [klein]: generation through diffusers' own `Flux2KleinInpaintPipeline`, in tryall's batch contract.

The crop and mask `prepare_pair` built go in as the pipeline's `image` and `mask_image`, the product as its
`image_reference`, one `torch.Generator` per pair (seeded with the pair's seed, on the CPU, so an image does not
depend on the device or its batch neighbours), and the pair's prompt. The pipeline's own code does the rest; this
module only adds what a batch engine needs around it:

- each distinct prompt is encoded once per actor and kept (on the CPU, a bounded LRU), and batches pass
  `prompt_embeds`: a catalogue's few category prompts cost one text-encoder call each per actor, not one per pair;
- where the run's prompts are known up front (`KleinSampler(prompts=...)`), they are encoded when the actor starts and
  the text encoder then leaves the GPU (moved to host memory: it is half the folder's weights);
- bf16 on a GPU (FLUX.2's activations overflow fp16), fp32 on CPU.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import Flux2KleinInpaintPipeline

from pipeline.core.model_families import KLEIN, model_defaults
from pipeline.core.model_sources import KLEIN_TINY_MODEL
from pipeline.core.sampling import check_steps_and_guidance
from pipeline.core.weights import check_weights_location

from .device import select_device
from .errors import CheckpointError

log = logging.getLogger(__name__)

# The pipeline's own prompt length (its tokenizer pads every prompt to it).
MAX_SEQUENCE_LENGTH = 512
# Encoded prompts kept per actor: 512 tokens x 7,680 features in bf16 is about 7.9 MB each for the public 4B.
PROMPT_CACHE_ENTRIES = 128


@dataclass(frozen=True)
class KleinParams:
    """How a klein image is sampled (the run's `sampling` settings, resolved against the model's defaults)."""

    steps: int
    guidance: float
    strength: float

    def __post_init__(self) -> None:
        check_steps_and_guidance(self.steps, self.guidance)
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {self.strength!r}")


@dataclass
class KleinBatch:
    """One batch of crops at model resolution R (a multiple of 16 for the public VAE and its 2x2 patches)."""

    scene: np.ndarray  # uint8 (B, R, R, 3): the context crop
    mask: np.ndarray  # bool (B, R, R): True = region to fill
    reference: np.ndarray  # uint8 (B, S, S, 3): the product image
    seeds: np.ndarray  # int64 (B,)
    prompts: Sequence[str]  # (B,)

    def __len__(self) -> int:
        return int(self.scene.shape[0])


def klein_dtype(device: torch.device, requested: torch.dtype | None) -> torch.dtype:
    """bf16 on a GPU unless fp32 is asked for (fp16 overflows in FLUX.2's activations); fp32 on CPU."""
    if device.type != "cuda":
        if requested not in (None, torch.float32):
            raise CheckpointError(f"dtype {requested} is not supported on {device}: CPU inference runs in fp32")
        return torch.float32
    if requested == torch.float16:
        raise CheckpointError("FLUX.2 [klein] does not run in fp16 (its activations overflow): use bf16 or auto")
    return requested or torch.bfloat16


def load_klein(path: Path | str, *, device: torch.device, dtype: torch.dtype) -> Flux2KleinInpaintPipeline:
    """The pipeline in the local folder `path` (a public FLUX.2 [klein] folder, or `klein-tiny`), on `device`.

    The folder is checked first as the driver checked it (every component, safetensors only), so a folder that changed
    since fails here with the same reason; `from_pretrained` then reads safetensors only."""
    if str(path) == KLEIN_TINY_MODEL:
        from .klein_build import build_tiny_klein

        pipe = build_tiny_klein()  # built in fp32
        if dtype != torch.float32:
            pipe = pipe.to(dtype=dtype)
    else:
        # The driver's own checks (pickles, every component, the shards), on the local copy.
        location = check_weights_location(str(path), None, where=str(path), what="FLUX.2 [klein] pipeline")
        if model_defaults(str(path), location, where=str(path)).family != KLEIN:
            raise CheckpointError(f"{path}: a DTC checkpoint, not a FLUX.2 [klein] pipeline folder")
        pipe = Flux2KleinInpaintPipeline.from_pretrained(path, dtype=dtype, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


class KleinSampler:
    """Generates batches with one klein pipeline; keeps each distinct prompt's encoding."""

    def __init__(self, pipe: Flux2KleinInpaintPipeline, params: KleinParams, *, model_id: str,
                 prompts: Sequence[str] | None = None) -> None:
        self.pipe, self.params, self.model_id = pipe, params, model_id
        self.device = pipe._execution_device
        self._encoded: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._kept = PROMPT_CACHE_ENTRIES
        self.encoder_calls = 0
        self._guided = params.guidance > 1.0 and not pipe.config.is_distilled
        if prompts is not None:
            wanted = sorted(set(prompts)) + ([""] if self._guided else [])
            self._encoded.update(self._encode(wanted))
            self._kept = max(PROMPT_CACHE_ENTRIES, len(wanted))  # the run's prompts all stay
            # Every prompt of the run is encoded: the text encoder's weights leave the GPU for the rest of the run.
            if self.device.type == "cuda":
                pipe.text_encoder.to("cpu")
                torch.cuda.empty_cache()
                log.info("encoded the run's %d prompts; the text encoder left the GPU", len(wanted))

    def _encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """One text-encoder call for `prompts`; the encodings kept on the host."""
        with torch.inference_mode():
            embeds, _ = self.pipe.encode_prompt(prompt=prompts, device=torch.device("cpu"),
                                                max_sequence_length=MAX_SEQUENCE_LENGTH)
        self.encoder_calls += 1
        return {prompt: embed.clone() for prompt, embed in zip(prompts, embeds, strict=True)}

    def _embeds(self, prompts: Sequence[str]) -> torch.Tensor:
        """The batch's prompt encodings, each distinct prompt encoded once; the least recently used leave the cache
        once it holds more than its bound (never one this batch needs)."""
        wanted = list(dict.fromkeys(prompts))
        found = {p: self._encoded[p] for p in wanted if p in self._encoded}
        missing = [p for p in wanted if p not in found]
        if missing:
            found.update(self._encode(missing))
        for p in wanted:
            self._encoded[p] = found[p]
            self._encoded.move_to_end(p)
        while len(self._encoded) > self._kept:
            self._encoded.popitem(last=False)
        return torch.stack([found[p] for p in prompts]).to(self.device)

    def call_arguments(self, batch: KleinBatch) -> dict[str, Any]:
        """The pipeline call for `batch`, but for the prompt: exactly what a user of diffusers would pass."""
        size = int(batch.scene.shape[1])
        return {
            "image": batch.scene.astype(np.float32) / 255.0,
            "mask_image": batch.mask.astype(np.float32)[..., None],
            "image_reference": batch.reference.astype(np.float32) / 255.0,
            "height": size,
            "width": size,
            "num_inference_steps": self.params.steps,
            "guidance_scale": self.params.guidance,
            "strength": self.params.strength,
            "generator": [torch.Generator("cpu").manual_seed(int(s)) for s in batch.seeds],
            "max_sequence_length": MAX_SEQUENCE_LENGTH,
            "output_type": "np",
        }

    def generate_unit(self, batch: KleinBatch) -> np.ndarray:
        """float32 (B, R, R, 3) in [0, 1]: the pipeline's own output."""
        prompts = list(batch.prompts)
        arguments = self.call_arguments(batch)
        arguments["prompt_embeds"] = self._embeds(prompts)
        if self._guided:
            arguments["negative_prompt_embeds"] = self._embeds([""] * len(prompts))
        with torch.inference_mode():
            return np.asarray(self.pipe(**arguments).images, dtype=np.float32)

    def generate(self, batch: KleinBatch) -> np.ndarray:
        """uint8 (B, R, R, 3), rounded as diffusers' `numpy_to_pil` does."""
        return (self.generate_unit(batch) * 255).round().astype(np.uint8)


def build_klein_sampler(source: str, params: KleinParams, *, dtype: torch.dtype | None = None,
                        cache_dir: str | None = None, storage_options: dict | None = None,
                        prompts: Sequence[str] | None = None) -> KleinSampler:
    """A sampler for `source` (a local folder, file:// or s3:// URI fetched once per node, or `klein-tiny`)."""
    from .loading import local_path

    device = select_device()
    dtype = klein_dtype(device, dtype)
    path = source if source == KLEIN_TINY_MODEL else local_path(source, cache_dir=cache_dir,
                                                                storage_options=storage_options)
    pipe = load_klein(path, device=device, dtype=dtype)
    log.info("FLUX.2 [klein] %s loaded on %s in %s", source, device, dtype)
    return KleinSampler(pipe, params, model_id=source, prompts=prompts)
