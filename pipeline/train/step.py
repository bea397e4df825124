"""The training objective: one batch of pairs -> per-sample loss, built the way the sampler builds its inputs.

The UNet input comes from `DTC.encode_masked_scene` and `DTC.unet_input` (the sampler's own calls), the hint from
`DTC.encode_hint`, the reference tokens from the image encoder with its learned unconditional token swapped in for
dropped references (classifier-free guidance), and the noisy latent from diffusers' DDPMScheduler on the model's own
training noise schedule. Each sample's noise comes from its own seed, so a sample's loss does not depend on its batch
or its worker.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch import nn

from pipeline.model import DTC
from pipeline.train.perceptual import VGGPerceptual


@dataclass
class Batch:
    """One micro-batch on the host, as the data stage produces it (see pipeline.train.data.prepare_batch)."""

    ok: torch.Tensor  # bool (B,): False for a skipped row (no loss)
    reason: torch.Tensor  # int64 (B,): why a row was skipped, an index into data.SKIP_REASONS (0: not skipped)
    scene: torch.Tensor  # uint8 (B, R, R, 3)
    mask: torch.Tensor  # uint8 (B, R, R), 1 = region to fill
    hint: torch.Tensor  # uint8 (B, R, R, 3)
    reference: torch.Tensor  # uint8 (B, S, S, 3)
    timestep_draw: torch.Tensor  # float64 (B,) in [0, 1): the sample's place on the training noise schedule
    noise_seed: torch.Tensor  # int64 (B,)
    drop_reference: torch.Tensor  # bool (B,)

    @classmethod
    def from_columns(cls, columns: dict[str, torch.Tensor]) -> Batch:
        return cls(**{name: columns[name] for name in cls.__dataclass_fields__})


def sample_noise(seeds: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """Per sample, from its own CPU generator: the target's posterior noise, the masked scene's, then the noise."""
    draws = [[], [], []]
    for seed in seeds.tolist():
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        for out in draws:
            out.append(torch.randn((1, *shape), generator=gen, dtype=torch.float32))
    return tuple(torch.cat(d) for d in draws)


# What the model's output can be, as diffusers' schedulers name it (the checkpoint's scheduler config says which):
# the noise (SD's), the velocity (SD 2's) or the clean latent.
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


class DenoisingLoss(nn.Module):
    """The MSE of the model's prediction (noise, velocity or clean latent; plus an optional perceptual term) per
    sample. The module DDP wraps: every trained parameter is
    reached through its forward."""

    def __init__(
        self,
        dtc: DTC,
        *,
        autocast_dtype: torch.dtype | None,
        perceptual: VGGPerceptual | None = None,
        perceptual_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.dtc = dtc
        self.perceptual = perceptual
        self.perceptual_weight = perceptual_weight
        self.autocast_dtype = autocast_dtype
        self.noise_scheduler = DDPMScheduler.from_config(dtc.scheduler_config)
        self.prediction_type = self.noise_scheduler.config.prediction_type
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"the model's scheduler predicts {self.prediction_type!r}; training supports "
                             f"{', '.join(PREDICTION_TYPES)}")

    def forward(self, batch: Batch) -> torch.Tensor:
        dtc = self.dtc
        device = dtc.device
        res = batch.scene.shape[1]
        latent_shape = (dtc.latent_channels, res // dtc.vae_scale_factor, res // dtc.vae_scale_factor)
        target_noise, masked_noise, noise = (t.to(device) for t in sample_noise(batch.noise_seed, latent_shape))
        scene = batch.scene.to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        fill = batch.mask.to(device).bool()[:, None]
        count = self.noise_scheduler.config.num_train_timesteps
        timesteps = (batch.timestep_draw * count).long().clamp(0, count - 1).to(device)
        with torch.no_grad():  # the VAE is always frozen: it defines the latent space the loss is measured in
            posterior = dtc.vae.encode(scene).latent_dist
            latents = (posterior.mean + posterior.std * target_noise) * dtc.vae.config.scaling_factor
            masked_latent, fill_latent = dtc.encode_masked_scene(scene, fill, masked_noise)
            noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        collage = batch.hint.to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        pixel_values = dtc.image_processor(
            images=list(batch.reference.cpu().numpy()), return_tensors="pt", input_data_format="channels_last"
        ).pixel_values.to(device)
        with torch.autocast(device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            hint_latent = dtc.encode_hint(collage)
            cond = dtc.image_encoder(pixel_values)
            # torch.where keeps the unconditional token in the graph on every step (DDP needs each trained
            # parameter used), whether or not this batch drops a reference.
            drop = batch.drop_reference.to(device)[:, None, None]
            tokens = torch.where(drop, dtc.image_encoder.unconditional(cond), cond)
            sample = dtc.unet_input(noisy, masked_latent, fill_latent)
            prediction = dtc(sample, timesteps, tokens, hint_latent)
        target = self.target(latents, noise, timesteps)
        loss = F.mse_loss(prediction.float(), target, reduction="none").mean(dim=(1, 2, 3))
        if self.perceptual is not None and self.perceptual_weight > 0:
            loss = loss + self.perceptual_weight * self._perceptual(noisy, prediction.float(), timesteps, scene)
        return loss

    def target(self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What the model should output for `latents` noised with `noise` at `timesteps`."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "v_prediction":
            return self.noise_scheduler.get_velocity(latents, noise, timesteps)
        return latents

    def predicted_x0(self, noisy: torch.Tensor, prediction: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The clean latent the model's output implies at `timesteps`, whatever it predicts."""
        alpha_bar = self.noise_scheduler.alphas_cumprod.to(noisy.device)[timesteps].float()[:, None, None, None]
        if self.prediction_type == "epsilon":
            return (noisy.float() - (1 - alpha_bar).sqrt() * prediction) / alpha_bar.sqrt()
        if self.prediction_type == "v_prediction":
            return alpha_bar.sqrt() * noisy.float() - (1 - alpha_bar).sqrt() * prediction
        return prediction

    def _perceptual(
        self, noisy: torch.Tensor, prediction: torch.Tensor, timesteps: torch.Tensor, scene: torch.Tensor
    ) -> torch.Tensor:
        """VGG distance between the target crop and the image of the predicted clean latent, weighted by the
        timestep's signal level (alpha-bar): at high noise the one-step x0 estimate is a blur whatever the model,
        so those steps should not drive the loss."""
        alpha_bar = self.noise_scheduler.alphas_cumprod.to(noisy.device)[timesteps].float()[:, None, None, None]
        x0 = self.predicted_x0(noisy, prediction, timesteps)
        image = self.dtc.vae.decode(x0 / self.dtc.vae.config.scaling_factor).sample
        return alpha_bar.flatten() * self.perceptual(image.float(), scene)
