"""The DTC network: equal to its base UNet with zero FiLM, different once the hint branch is non-zero."""

from __future__ import annotations

import copy

import pytest
import torch

from pipeline.model import DTC
from pipeline.model.build import build_random
from pipeline.model.configs import SD15


def _inputs(dtc: DTC, size: int, batch: int = 2) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(batch, 9, size, size, generator=gen)
    tokens = torch.randn(batch, 257, dtc.unet.config.cross_attention_dim, generator=gen)
    hint_latent = torch.randn(batch, 4, size, size, generator=gen)
    return sample, tokens, hint_latent


def _randomise_hint_branch(dtc: DTC) -> DTC:
    """A copy whose FiLM layers and adapter output are non-zero (as after training)."""
    dtc = copy.deepcopy(dtc)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for film in [*dtc.hint.films, dtc.hint.film_mid]:
            film.proj.weight.copy_(0.3 * torch.randn(film.proj.weight.shape, generator=gen))
            film.proj.bias.copy_(0.3 * torch.randn(film.proj.bias.shape, generator=gen))
        last = dtc.hint.adapter.layers[-1]
        last.weight.copy_(0.3 * torch.randn(last.weight.shape, generator=gen))
    return dtc


@pytest.mark.parametrize(
    ("size", "timestep"),
    [(32, torch.tensor(500)), (32, torch.tensor([10, 990])), (33, torch.tensor(250.5))],
    ids=["scalar-t", "per-sample-t", "odd-size-float-t"],
)
def test_zero_film_equals_unet_forward(tiny_dtc, size, timestep):
    sample, tokens, hint_latent = _inputs(tiny_dtc, size)
    with torch.inference_mode():
        ours = tiny_dtc(sample, timestep, tokens, hint_latent)
        reference = tiny_dtc.unet(sample, timestep, encoder_hidden_states=tokens).sample
    assert ours.shape == reference.shape == (2, 4, size, size)
    assert (ours - reference).abs().max().item() <= 1e-5


def test_nonzero_hint_branch_changes_output(tiny_dtc):
    trained = _randomise_hint_branch(tiny_dtc)
    sample, tokens, hint_latent = _inputs(tiny_dtc, 32)
    with torch.inference_mode():
        base = tiny_dtc.unet(sample, torch.tensor(500), encoder_hidden_states=tokens).sample
        with_hint = trained(sample, torch.tensor(500), tokens, hint_latent)
        other_hint = trained(sample, torch.tensor(500), tokens, -hint_latent)
    assert (with_hint - base).abs().max().item() > 1e-3
    assert (with_hint - other_hint).abs().max().item() > 1e-3


def test_hint_encoder_starts_as_copy_of_main_encoder(tiny_dtc):
    main = tiny_dtc.unet.state_dict()
    for name, tensor in tiny_dtc.hint.encoder.state_dict().items():
        assert torch.equal(tensor, main[name]), name
    assert tiny_dtc.hint.encoder.conv_in.weight.data_ptr() != tiny_dtc.unet.conv_in.weight.data_ptr()
    for film in [*tiny_dtc.hint.films, tiny_dtc.hint.film_mid]:
        assert not film.proj.weight.any() and not film.proj.bias.any()
    assert not tiny_dtc.hint.adapter.layers[-1].weight.any()


def test_sd15_shapes_and_parameter_counts_on_meta():
    dtc = build_random(SD15, torch.device("meta"), torch.float16)
    assert len(dtc.hint.films) == 12  # SD 1.5's skip connections; plus one FiLM for the mid block
    assert dtc.hint.adapter(torch.empty(1, 3, 512, 512, device="meta", dtype=torch.float16)).shape == (1, 4, 64, 64)
    assert dtc.default_resolution == 512 and dtc.vae_scale_factor == 8
    counts = dtc.parameter_counts()
    assert counts["unet"] == 859_535_364  # SD 1.5 inpainting UNet
    assert counts["vae"] == 83_653_863  # SD KL-f8 VAE
    backbone = sum(p.numel() for p in dtc.image_encoder.backbone.parameters())
    assert backbone == 1_134_771_200  # DINOv2 ViT-g/14 (SwiGLU FFN)
    assert counts["image_encoder"] == backbone + 1536 * 768 + 768 + 768  # + projection + uncond vector
    tokens = dtc.image_encoder(torch.empty(1, 3, 224, 224, device="meta", dtype=torch.float16))
    assert tokens.shape == (1, 257, 768)


@pytest.mark.parametrize("kind", ["dinov2", "paint_by_example"])
def test_parts_split_every_parameter_once(tiny_dtc, pbe_dir, kind):
    from pipeline.core.provenance import PART_NAMES
    from pipeline.model import load_dtc

    dtc = tiny_dtc if kind == "dinov2" else load_dtc(str(pbe_dir), device=torch.device("meta"))
    assert dtc.image_encoder.kind == kind
    parts = dtc.part_parameters()
    assert tuple(parts) == PART_NAMES and all(parts.values())
    ids = [id(p) for params in parts.values() for p in params]
    assert len(ids) == len(set(ids)) == len(list(dtc.parameters()))
    size = lambda *names: sum(p.numel() for n in names for p in parts[n])  # noqa: E731
    counts = dtc.parameter_counts()
    assert size("unet.encoder", "unet.decoder") == counts["unet"]
    assert size("hint.encoder") == counts["hint.encoder"] and size("hint.film") == counts["hint.film"]
    assert size(*(n for n in PART_NAMES if n.startswith("image_encoder."))) == counts["image_encoder"]
    assert size("image_encoder.uncond_vector") == dtc.unet.config.cross_attention_dim
