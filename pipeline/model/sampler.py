"""Batched DTC sampling: preprocessing as the diffusers inpainting pipelines do it, one guided forward per step,
per-sample seeds. The UNet's input follows the checkpoint's layout (`unet_inputs`), so a Paint-by-Example checkpoint
reproduces `PaintByExamplePipeline` and an SD-inpainting one `StableDiffusionInpaintPipeline`.

Speed by construction (the baseline to beat is a naive fp32, batch-1, two-forwards-per-step loop):
- classifier-free guidance runs the conditional and unconditional halves as one stacked batch;
- the VAE decodes the whole batch at once (it encodes one image at a time, see `encode_masked_scene`); everything
  constant over the loop (masked-scene latents, mask, hint adapter output, reference tokens) is computed once;
- the loop never waits on the GPU: scheduler arithmetic stays on host scalars, the timesteps the model needs are
  moved to the device once, and nothing is read back until the final images (one synchronisation per batch);
- inputs reach a GPU from pinned host memory with non-blocking copies, as uint8 pixels (4x less than fp32), and the
  images come back as uint8 (quantised on the device);
- the model runs in the DTC's dtype (fp16 by default on GPU) with SDPA attention, and cuDNN picks its fastest
  convolution algorithms for the (fixed) shapes (`torch.backends.cudnn.benchmark`, turned on for CUDA samplers);
  `channels_last` and `compile` are opt-in (`model.channels_last`, `model.compile`) because their benefit depends
  on the GPU and the PyTorch build: they are unmeasured on our GPUs so far (benchmarks/README.md).

Determinism: each sample's noise comes from its own `torch.Generator` seeded with its seed, drawn on the CPU in fp32
and then moved, so an image depends only on its own inputs and seed, not on its batch, its position, the device
or the dtype's RNG. Bit-identity across batch sizes is not promised: batched UNet/decoder kernels (CPU oneDNN, cuDNN,
cuBLAS) round differently for different batch sizes, so the same sample alone and inside a batch differ by float
noise (about 1e-5 on the tiny model), which can flip a rare pixel by one uint8 level.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from torch import nn

from pipeline.core.sampling import (
    DEFAULT_GUIDANCE,
    DEFAULT_SCHEDULER,
    DEFAULT_STEPS,
    SCHEDULERS,
    check_steps_and_guidance,
)

from .dtc import DTC
from .unet_inputs import unit_range

# Every scheduler is deterministic given its initial noise (DDIM with eta=0, DPM-Solver++ without its SDE variant,
# Euler without churn), so the per-sample seed fully determines an image and no noise is drawn inside the loop.


@dataclass(frozen=True)
class SamplingParams:
    """What the metadata records about how an image was sampled. Defaults are the paper's (DDIM, 40 steps, 5.0)."""

    scheduler: str = DEFAULT_SCHEDULER
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}")
        check_steps_and_guidance(self.steps, self.guidance)


@dataclass
class SampleBatch:
    """One batch of crops at model resolution R (a multiple of the VAE's downscale, 8)."""

    scene: np.ndarray  # uint8 (B, R, R, 3): the context crop
    mask: np.ndarray  # bool (B, R, R): True = region to fill
    hint: np.ndarray  # uint8 (B, R, R, 3): the crude collage
    reference: np.ndarray  # uint8 (B, S, S, 3): the product image
    seeds: np.ndarray  # int64 (B,)

    def __len__(self) -> int:
        return int(self.scene.shape[0])

    def validate(self, multiple: int) -> None:
        """Raise ValueError naming the field if shapes or dtypes are not what the sampler expects."""
        scene, mask, hint, ref, seeds = self.scene, self.mask, self.hint, self.reference, np.asarray(self.seeds)
        if scene.dtype != np.uint8 or scene.ndim != 4 or scene.shape[-1] != 3:
            raise ValueError(f"scene must be uint8 (B, R, R, 3), got {scene.dtype} {scene.shape}")
        b, h, w = scene.shape[:3]
        if b < 1:
            raise ValueError("a batch needs at least one sample")
        if h % multiple or w % multiple:
            raise ValueError(f"scene size {h}x{w} must be a multiple of {multiple}")
        if mask.dtype != np.bool_ or mask.shape != (b, h, w):
            raise ValueError(f"mask must be bool {(b, h, w)}, got {mask.dtype} {mask.shape}")
        if hint.dtype != np.uint8 or hint.shape != scene.shape:
            raise ValueError(f"hint must be uint8 {scene.shape}, got {hint.dtype} {hint.shape}")
        if ref.dtype != np.uint8 or ref.ndim != 4 or ref.shape[0] != b or ref.shape[-1] != 3:
            raise ValueError(f"reference must be uint8 ({b}, S, S, 3), got {ref.dtype} {ref.shape}")
        if not np.issubdtype(seeds.dtype, np.integer) or seeds.shape != (b,):
            raise ValueError(f"seeds must be integers of shape ({b},), got {seeds.dtype} {seeds.shape}")


def make_scheduler(name: str, config: dict) -> SchedulerMixin:
    """A fresh scheduler of kind `name` on the model's training noise schedule."""
    if name == "ddim":
        return DDIMScheduler.from_config(config)
    if name == "dpmpp":
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++")
    if name == "euler":
        return EulerDiscreteScheduler.from_config(config)
    raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {name!r}")


def _to_device(array: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host array on `device`: on CUDA through pinned memory with a non-blocking copy. The copy is ordered on the
    current stream, so later kernels see the data, and the caching host allocator keeps the pinned block until the
    copy is done."""
    tensor = array if isinstance(array, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(array))
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


class DTCSampler:
    """Generates inpainted crops for a `SampleBatch` of any size with one DTC and fixed `SamplingParams`.

    `channels_last` converts the convolutional modules' memory format (changes `dtc` in place; usually faster with
    fp16 on tensor-core GPUs); `compile` wraps the denoiser in `torch.compile` (static shapes: the first batch of
    each size compiles, a few minutes for sd15). Each call works on its own copy of the scheduler, so calls never
    share sampling state.
    """

    def __init__(
        self, dtc: DTC, params: SamplingParams | None = None, *, channels_last: bool = False, compile: bool = False
    ) -> None:
        self.dtc = dtc
        self.params = params if params is not None else SamplingParams()
        self._scheduler = make_scheduler(self.params.scheduler, dtc.scheduler_config)
        if channels_last:
            for module in (dtc.unet, dtc.hint, dtc.vae):
                nn.Module.to(module, memory_format=torch.channels_last)
        if dtc.device.type == "cuda":
            # Shapes are fixed per batch size, so autotuning convolutions once per shape pays for itself after the
            # first step. Process-wide, like every cuDNN setting; the algorithms it picks may round differently in
            # the last bits, which GPU images never promised (see Determinism above).
            torch.backends.cudnn.benchmark = True
        # dynamic=False: a batch of a new size recompiles instead of switching every shape to slower symbolic code.
        self._denoise: nn.Module = torch.compile(dtc, dynamic=False) if compile else dtc

    @property
    def do_guidance(self) -> bool:
        # As in diffusers: guidance 1 means the conditional prediction alone, so skip the unconditional half.
        return self.params.guidance > 1.0

    def generate(self, batch: SampleBatch) -> np.ndarray:
        """uint8 (B, R, R, 3) images."""
        images = self._sample(batch)
        return (images.float() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    def generate_float(self, batch: SampleBatch) -> np.ndarray:
        """float32 (B, R, R, 3) images in [0, 1], before quantisation (what diffusers returns for output_type="np")."""
        return self._sample(batch).permute(0, 2, 3, 1).float().cpu().numpy()

    def _noise(self, seeds: np.ndarray, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per sample, from its own generator: initial latent noise, then the VAE posterior's noise (the order of both
        diffusers pipelines at full strength)."""
        noise, posterior = [], []
        for seed in seeds.tolist():
            gen = torch.Generator(device="cpu").manual_seed(int(seed))
            noise.append(torch.randn((1, *shape), generator=gen, dtype=torch.float32))
            posterior.append(torch.randn((1, *shape), generator=gen, dtype=torch.float32))
        return torch.cat(noise), torch.cat(posterior)

    @torch.inference_mode()
    def _sample(self, batch: SampleBatch) -> torch.Tensor:
        dtc, params = self.dtc, self.params
        batch.validate(dtc.vae_scale_factor)
        device, dtype = dtc.device, dtc.dtype
        vae = dtc.vae
        height, width = batch.scene.shape[1:3]
        c, f = dtc.latent_channels, dtc.vae_scale_factor
        latent_shape = (c, height // f, width // f)
        noise, posterior_noise = self._noise(np.asarray(batch.seeds), latent_shape)

        scene = unit_range(_to_device(batch.scene, device))
        fill = _to_device(batch.mask, device)[:, None]
        masked_latent, fill_latent = dtc.encode_masked_scene(scene, fill, _to_device(posterior_noise, device))

        collage = unit_range(_to_device(batch.hint, device)).to(dtype)
        hint_latent = dtc.encode_hint(collage)

        pixel_values = dtc.image_processor(
            images=list(batch.reference), return_tensors="pt", input_data_format="channels_last"
        ).pixel_values
        cond = dtc.image_encoder(_to_device(pixel_values, device).to(dtype))
        if self.do_guidance:
            # Guidance drops the reference only: the unconditional half keeps the scene, the mask and the hint. The
            # hint is spatial evidence like the masked scene (which inpainting guidance never drops), and keeping it
            # in both halves means guidance amplifies the product identity from the reference, not the crude
            # collage's pixels. With a zero hint branch this is exactly PBE's guidance.
            tokens = torch.cat([dtc.image_encoder.unconditional(cond), cond])
            masked_latent = torch.cat([masked_latent, masked_latent])
            fill_latent = torch.cat([fill_latent, fill_latent])
            hint_latent = torch.cat([hint_latent, hint_latent])
        else:
            tokens = cond

        scheduler = copy.deepcopy(self._scheduler)
        scheduler.set_timesteps(params.steps, device="cpu")
        timesteps = scheduler.timesteps
        model_timesteps = _to_device(timesteps, device)
        latents = _to_device(noise, device).to(dtype) * scheduler.init_noise_sigma
        for i, t in enumerate(timesteps):
            model_in = torch.cat([latents, latents]) if self.do_guidance else latents
            model_in = dtc.unet_input(scheduler.scale_model_input(model_in, t), masked_latent, fill_latent)
            noise_pred = self._denoise(model_in, model_timesteps[i], tokens, hint_latent)
            if self.do_guidance:
                noise_uncond, noise_cond = noise_pred.chunk(2)
                noise_pred = noise_uncond + params.guidance * (noise_cond - noise_uncond)
            latents = scheduler.step(noise_pred, t, latents, return_dict=False)[0]

        images = vae.decode(latents / vae.config.scaling_factor).sample
        return (images * 0.5 + 0.5).clamp(0, 1)
