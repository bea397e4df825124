"""The naive reference sampler: the paper's settings run the plain way, to measure our fast path against.

`NaiveSampler` uses the DTC's own components (UNet + hint branch forward, VAE, reference encoder, scheduler) with no
optimisation: one image at a time, fp32, and classifier-free guidance as two separate network passes per step
(unconditional, then conditional), the timestep handed over as a host tensor each call, and the VAE decoding one
image per call. It follows the same maths as `DTCSampler` (same inputs, noise, guidance), so its images equal the
fast path's up to float rounding: the benchmark reports the largest pixel difference to show the two do the same work.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.model.dtc import DTC
from pipeline.model.sampler import SampleBatch, SamplingParams, make_scheduler


class NaiveSampler:
    """Batch 1, two UNet passes per step, everything in the DTC's dtype (load it in fp32 for the paper's setting)."""

    def __init__(self, dtc: DTC, params: SamplingParams | None = None) -> None:
        self.dtc = dtc
        self.params = params if params is not None else SamplingParams()

    def generate(self, batch: SampleBatch) -> np.ndarray:
        """uint8 (B, R, R, 3): each sample generated on its own."""
        return np.concatenate([self._one(batch, i) for i in range(len(batch))])

    @torch.inference_mode()
    def _one(self, batch: SampleBatch, i: int) -> np.ndarray:
        dtc, params = self.dtc, self.params
        device, dtype, vae = dtc.device, dtc.dtype, dtc.vae
        f, c = dtc.vae_scale_factor, dtc.latent_channels
        height, width = batch.scene.shape[1:3]
        shape = (1, c, height // f, width // f)
        gen = torch.Generator(device="cpu").manual_seed(int(batch.seeds[i]))
        noise = torch.randn(shape, generator=gen, dtype=torch.float32)
        posterior_noise = torch.randn(shape, generator=gen, dtype=torch.float32)

        def pixels(array: np.ndarray) -> torch.Tensor:  # uint8 (R, R, 3) -> (1, 3, R, R) in [-1, 1]
            return (torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1.0).to(device, dtype)

        fill = torch.from_numpy(batch.mask[i].copy())[None, None]
        masked_latent, fill_latent = dtc.encode_masked_scene(pixels(batch.scene[i]), fill, posterior_noise)
        hint_latent = dtc.encode_hint(pixels(batch.hint[i]))
        pixel_values = dtc.image_processor(
            images=[batch.reference[i]], return_tensors="pt", input_data_format="channels_last"
        ).pixel_values
        cond = dtc.image_encoder(pixel_values.to(device, dtype))
        uncond = dtc.image_encoder.unconditional(cond).contiguous()

        scheduler = make_scheduler(params.scheduler, dtc.scheduler_config)
        scheduler.set_timesteps(params.steps, device="cpu")
        latents = noise.to(device, dtype) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            model_in = dtc.unet_input(scheduler.scale_model_input(latents, t), masked_latent, fill_latent)
            eps_uncond = dtc(model_in, t, uncond, hint_latent)
            eps_cond = dtc(model_in, t, cond, hint_latent)
            eps = eps_uncond + params.guidance * (eps_cond - eps_uncond)
            latents = scheduler.step(eps, t, latents).prev_sample
        image = vae.decode(latents / vae.config.scaling_factor).sample
        image = (image * 0.5 + 0.5).clamp(0, 1)
        return (image.float() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
