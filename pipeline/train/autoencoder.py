"""Stage one of a model trained from nothing: its VAE, trained alone as an autoencoder.

The small configurations have no pretrained VAE, and the DTC training job keeps the VAE frozen (its latent space is
what the UNet learns to denoise), so the VAE is trained first: reconstruction (MSE + L1) and a small KL term, on the
training manifest's crops exactly as the training job makes them (`pipeline.train.data.pair_from_row`), half of them
with the region blanked as the sampler blanks it before encoding. The output is a DTC checkpoint of the named
configuration (its other parts seeded random) with this VAE and a latent scaling factor that gives the latents unit
variance, as Stable Diffusion's 0.18215 does for its VAE; the training job starts from it.

One process and in-memory crops: a few thousand 64 px crops fit in tens of MB, and the stage needs no data
pipeline; the DTC stage is the project's Ray Train job.

    python -m pipeline.train.autoencoder --config configs/train-demo-autoencoder.yaml
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.models.resnet import ResnetBlock2D
from pydantic import Field
from torch import nn

from pipeline.core.errors import JobError
from pipeline.core.provenance import with_training
from pipeline.core.settings import JobSettings, load_settings
from pipeline.train.config import TrainDataConfig
from pipeline.train.data import load_train_manifest, pair_from_row
from pipeline.train.pairs import pair_rng

log = logging.getLogger(__name__)

_COLOUR = 3  # RGB: the channels the linear start carries


class AutoencoderSettings(JobSettings):
    """Settings of the autoencoder stage (a YAML file, TRYALL_* variables, --set overrides)."""

    manifest_uri: str = Field(description="the training manifest (the DTC stage's): image_uri, region, split")
    output_dir: str = Field(description="where the DTC checkpoint with the trained VAE is written (must not exist)")
    model: str = Field("small", description="the named configuration whose VAE is trained")
    resolution: int = Field(64, ge=16, description="crop size in pixels, as the DTC stage's data.resolution")
    context_margin: float = Field(0.25, ge=0.0, description="context around the region, as at inference")
    steps: int = Field(1000, ge=1, description="optimizer steps")
    batch_size: int = Field(8, ge=1)
    lr: float = Field(3e-3, gt=0.0, description="AdamW learning rate (cosine decay to a tenth after warm-up)")
    warmup_steps: int = Field(50, ge=0)
    l1_weight: float = Field(0.5, ge=0.0, description="weight of the L1 term next to the MSE")
    kl_weight: float = Field(1e-6, ge=0.0, description="weight of the KL term (small: a near-deterministic encoder)")
    masked_share: float = Field(0.5, ge=0.0, le=1.0, description="share of crops with the region blanked")
    seed: int = Field(0, ge=0, description="model init, crop order and posterior noise derive from it")
    threads: int = Field(1, ge=1, description="torch threads")
    progress_every: int = Field(50, ge=1, description="a progress line (loss, held-out PSNR) every N steps")


def _crops(settings: AutoencoderSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train crops, train masks, val crops, val masks): uint8 (N, R, R, 3) and bool (N, R, R)."""
    manifest = load_train_manifest(settings.manifest_uri)
    cfg = TrainDataConfig(
        resolution=settings.resolution, context_margin=settings.context_margin, mask_grow=0.0, irregular_mask_p=0.0
    )
    out = []
    for table in (manifest.train, manifest.val):
        scenes, masks = [], []
        for row, record in enumerate(table.to_pylist()):
            pair = pair_from_row(record, rng=pair_rng(settings.seed, 0, row), cfg=cfg, s3=None)
            scenes.append(pair.scene)
            masks.append(pair.mask)
        res = settings.resolution
        out.append(np.stack(scenes) if scenes else np.zeros((0, res, res, 3), np.uint8))
        out.append(np.stack(masks).astype(bool) if masks else np.zeros((0, res, res), bool))
    return out[0], out[1], out[2], out[3]


def _unit(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, R, R, 3) -> float (N, 3, R, R) in [-1, 1], the VAE's input range."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def blank_region(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The region set to 0, as the sampler blanks it before encoding the masked scene."""
    return images * (~masks)[:, None].float()


def reconstruction_psnr(vae: AutoencoderKL, images: torch.Tensor) -> float:
    """Mean PSNR (dB, images in [-1, 1]) of the VAE's reconstructions from the posterior means."""
    with torch.no_grad():
        rec = vae.decode(vae.encode(images).latent_dist.mode()).sample.clamp(-1, 1)
    mse = ((rec - images) / 2).pow(2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
    return float((10 * torch.log10(1 / mse)).mean())


def latent_scale(vae: AutoencoderKL, images: torch.Tensor, batch: int = 64) -> float:
    """1 / std of the posterior means: the scaling factor that gives the diffusion model unit-variance latents."""
    with torch.no_grad():
        means = torch.cat([vae.encode(images[i : i + batch]).latent_dist.mode() for i in range(0, len(images), batch)])
    return float(1.0 / means.std())


def _pass_colour(
    conv: nn.Conv2d, *, taps: tuple[slice, slice], weight: float, offset: float, bias: float = 0.0
) -> None:
    """`conv` copies input channels 0..2 to output channels 0..2 (each tap in `taps` weighted `weight`, plus `bias`)
    and outputs the constant `offset` on every other channel."""
    conv.weight.zero_()
    conv.bias.fill_(offset)
    for c in range(_COLOUR):
        conv.weight[c, c, taps[0], taps[1]] = weight
        conv.bias[c] = bias


def _calibrate_norm(norm: nn.GroupNorm, offset: float, operating_point: float) -> None:
    """GroupNorm (one group) of channels 0..2 carrying colour next to channels held at `offset`: set its affine so
    that colour channels come out as colour + `operating_point` and the others as `operating_point`, where SiLU is
    the identity to within 0.3%. The constant channels dominate the group's statistics, so the colours' own
    spatial means (flat colour) survive the normalisation instead of being removed by it."""
    share = (norm.num_channels - _COLOUR) / norm.num_channels
    mean, std = offset * share, offset * math.sqrt(share * (1 - share))
    norm.weight.fill_(std)
    norm.bias.fill_(mean - offset + operating_point)
    norm.bias[:_COLOUR] = mean + operating_point


def linear_start(vae: AutoencoderKL, offset: float = 10.0, operating_point: float = 8.0) -> None:
    """Start the VAE as a linear autoencoder: encode colour as its 4x4 (the grid's) average into latent channels
    0..2, decode by near-bilinear upsampling; every residual branch zero, every other latent channel zero.

    From a random start this VAE spends hundreds of steps reproducing grey images: its output and latent pass
    through GroupNorm, which removes each image's mean, and flat colour is most of these images. Starting from a
    working linear path, training begins at the colours and only has to learn the details. The encoder's
    log-variance starts at -12 (std 0.0025), so posterior samples (which the sampler draws) are the means.
    Needs one norm group (`norm_num_groups: 1`) and widths above 3.
    """
    if vae.encoder.conv_norm_out.num_groups != 1 or vae.decoder.conv_norm_out.num_groups != 1:
        raise ValueError("linear_start needs a VAE with norm_num_groups=1")
    centre = (slice(1, 2), slice(1, 2))
    with torch.no_grad():
        for module in vae.modules():
            if isinstance(module, ResnetBlock2D):
                module.conv2.weight.zero_()
                module.conv2.bias.zero_()
                if module.conv_shortcut is not None:
                    _pass_colour(module.conv_shortcut, taps=(slice(0, 1), slice(0, 1)), weight=1.0, offset=offset)
        encoder, decoder = vae.encoder, vae.decoder
        _pass_colour(encoder.conv_in, taps=centre, weight=1.0, offset=offset)
        for block in encoder.down_blocks:
            for down in block.downsamplers or []:  # a 2x2 average (the conv reads a 3x3 window from its corner)
                _pass_colour(down.conv, taps=(slice(0, 2), slice(0, 2)), weight=0.25, offset=offset)
        _calibrate_norm(encoder.conv_norm_out, offset, operating_point)
        latent = int(vae.config.latent_channels)
        _pass_colour(encoder.conv_out, taps=centre, weight=1.0, offset=0.0, bias=-operating_point)
        encoder.conv_out.bias[latent:] = -12.0
        for conv in (vae.quant_conv, vae.post_quant_conv):
            if conv is not None:
                conv.weight.copy_(torch.eye(conv.out_channels)[:, :, None, None])
                conv.bias.zero_()
        _pass_colour(decoder.conv_in, taps=centre, weight=1.0, offset=offset)
        smooth = torch.tensor([0.25, 0.5, 0.25])
        for block in decoder.up_blocks:
            for up in block.upsamplers or []:  # nearest upsampling, then a [1 2 1] smoothing: near bilinear
                _pass_colour(up.conv, taps=centre, weight=1.0, offset=offset)
                for c in range(_COLOUR):
                    up.conv.weight[c, c] = smooth[:, None] * smooth[None, :]
        _calibrate_norm(decoder.conv_norm_out, offset, operating_point)
        _pass_colour(decoder.conv_out, taps=centre, weight=1.0, offset=0.0, bias=-operating_point)


def train_autoencoder(settings: AutoencoderSettings) -> Path:
    """Train the VAE of `settings.model` and write the DTC checkpoint; returns its directory."""
    from pipeline.model import save_checkpoint
    from pipeline.model.build import build_random
    from pipeline.model.configs import NAMED_CONFIGS

    out = Path(settings.output_dir)
    if out.exists() and any(out.iterdir()):
        raise JobError(f"output_dir {out} already exists and is not empty (remove it, or choose another)")
    if settings.model not in NAMED_CONFIGS:
        raise JobError(f"model {settings.model!r} is not a named configuration ({', '.join(NAMED_CONFIGS)})")
    torch.set_num_threads(settings.threads)
    started = time.monotonic()
    train, train_masks, val, val_masks = _crops(settings)
    log.info("%d training crops and %d held-out crops at %d px in %.0f s", len(train), len(val),
             settings.resolution, time.monotonic() - started)
    dtc = build_random(NAMED_CONFIGS[settings.model], torch.device("cpu"), torch.float32, seed=settings.seed)
    vae = dtc.vae
    linear_start(vae)
    vae.train()
    images, masks = _unit(train), torch.from_numpy(train_masks)
    held_out = _unit(val) if len(val) else images[: min(64, len(images))]
    optimizer = torch.optim.AdamW(vae.parameters(), lr=settings.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(settings.seed)

    def lr_at(step: int) -> float:
        if step < settings.warmup_steps:
            return settings.lr * (step + 1) / settings.warmup_steps
        done = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
        return settings.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * done)))

    window = 0.0
    for step in range(settings.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        index = torch.randint(0, len(images), (settings.batch_size,), generator=gen)
        batch = images[index]
        blank = torch.rand(settings.batch_size, generator=gen) < settings.masked_share
        batch = torch.where(blank[:, None, None, None], blank_region(batch, masks[index]), batch)
        flip = torch.rand(settings.batch_size, generator=gen) < 0.5
        batch = torch.where(flip[:, None, None, None], batch.flip(3), batch)
        posterior = vae.encode(batch).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=gen)
        rec = vae.decode(posterior.mean + posterior.std * noise).sample
        loss = (
            F.mse_loss(rec, batch) + settings.l1_weight * F.l1_loss(rec, batch)
            + settings.kl_weight * posterior.kl().mean()
        )
        if not torch.isfinite(loss):
            raise JobError(f"the autoencoder's loss at step {step + 1} is {loss.item()}: training stopped")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        window += loss.item()
        if (step + 1) % settings.progress_every == 0 or step + 1 == settings.steps:
            vae.eval()
            log.info("autoencoder step %d/%d loss %.4f held-out PSNR %.2f dB (%.0f s)", step + 1, settings.steps,
                     window / settings.progress_every, reconstruction_psnr(vae, held_out), time.monotonic() - started)
            vae.train()
            window = 0.0
    vae.eval()
    scale = latent_scale(vae, images)
    vae.register_to_config(scaling_factor=scale)
    psnr = reconstruction_psnr(vae, held_out)
    dtc.provenance = with_training(
        dtc.provenance, ["vae"], data_uri=settings.manifest_uri, steps=settings.steps,
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    save_checkpoint(dtc, out)
    log.info("VAE trained in %.0f s: held-out PSNR %.2f dB, latent scaling factor %.4f; checkpoint %s",
             time.monotonic() - started, psnr, scale, out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.train.autoencoder", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="YAML or JSON settings file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        train_autoencoder(load_settings(AutoencoderSettings, args.config, args.set))
    except JobError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return JobError.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
