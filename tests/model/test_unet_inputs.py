"""The UNet input's two layouts, the masked-scene preparation, and where the hint encoder adds the hint."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.model.unet_inputs import (
    INPUT_LAYOUTS,
    PAINT_BY_EXAMPLE,
    SD_INPAINT,
    add_to_masked_latent,
    build_unet_input,
    check_input_layout,
)

from .test_dtc_forward import _randomise_hint_branch


def _parts(batch: int = 2, size: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    noisy = torch.randn(batch, 4, size, size, generator=gen)
    masked = torch.randn(batch, 4, size, size, generator=gen)
    fill = (torch.rand(batch, 1, size, size, generator=gen) > 0.5).float()
    return noisy, masked, fill


def test_channel_orders_are_the_diffusers_pipelines():
    noisy, masked, fill = _parts()
    pbe = build_unet_input(PAINT_BY_EXAMPLE, noisy, masked, fill)
    sd = build_unet_input(SD_INPAINT, noisy, masked, fill)
    # PaintByExamplePipeline: [latents, masked_image_latents, mask] with its inverted mask (region to fill = 0).
    assert torch.equal(pbe, torch.cat([noisy, masked, 1 - fill], dim=1))
    # StableDiffusionInpaintPipeline: [latents, mask, masked_image_latents] with the region to fill = 1.
    assert torch.equal(sd, torch.cat([noisy, fill, masked], dim=1))
    # A bool fill-mask gives the same input as a 0/1 float one.
    assert torch.equal(build_unet_input(SD_INPAINT, noisy, masked, fill.bool()), sd)


@pytest.mark.parametrize("layout", INPUT_LAYOUTS)
def test_hint_goes_to_the_masked_latent_channels(layout):
    noisy, masked, fill = _parts()
    delta = torch.randn_like(masked)
    added = add_to_masked_latent(layout, build_unet_input(layout, noisy, masked, fill), delta)
    assert torch.equal(added, build_unet_input(layout, noisy, masked + delta, fill))


def test_unknown_layout_refused():
    with pytest.raises(ValueError, match=r"dtc.json: input_layout 'sd15' is not one of"):
        check_input_layout("sd15", "dtc.json")
    with pytest.raises(ValueError, match="input_layout"):
        build_unet_input("sd15", *_parts())


def test_masked_scene_ignores_the_region_and_resizes_the_mask_by_nearest(tiny_dtc):
    gen = torch.Generator().manual_seed(1)
    scene = torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1
    fill = torch.zeros(2, 1, 64, 64, dtype=torch.bool)
    fill[0, :, 10:40, 20:50] = True
    fill[1, :, :, :13] = True  # a region on the border
    noise = torch.randn(2, 4, 8, 8, generator=gen)
    other = torch.where(fill, torch.rand(scene.shape, generator=gen), scene)
    with torch.inference_mode():
        masked, fill_latent = tiny_dtc.encode_masked_scene(scene, fill, noise)
        masked_other, _ = tiny_dtc.encode_masked_scene(other, fill, noise)
        masked_float, fill_float = tiny_dtc.encode_masked_scene(scene, fill.float() * 0.9, noise)
        alone, _ = tiny_dtc.encode_masked_scene(scene[1:], fill[1:], noise[1:])
    assert masked.shape == (2, 4, 8, 8) and fill_latent.shape == (2, 1, 8, 8)
    # The region's pixels never reach the latent; other pixels do.
    assert torch.equal(masked, masked_other)
    assert torch.equal(fill_latent, F.interpolate(fill.float(), size=(8, 8), mode="nearest"))
    # A float mask is binarised at 0.5 (SD-inpainting's rule): 0.9 is region.
    assert torch.equal(masked_float, masked) and torch.equal(fill_float, fill_latent)
    # One image per VAE call: a sample's latent does not depend on its batch.
    assert torch.equal(alone[0], masked[1])


@pytest.mark.parametrize("layout", INPUT_LAYOUTS)
def test_hint_encoder_sees_the_hint_on_the_masked_latent(tiny_dtc, layout):
    dtc = _randomise_hint_branch(tiny_dtc)
    dtc.input_layout = layout
    noisy, masked, fill = _parts(size=16)
    hint = torch.randn_like(masked)
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        module.conv_in.register_forward_hook(lambda _, args, out, name=name: seen.__setitem__(name, args[0]))
        for name, module in (("main", dtc.unet), ("hint", dtc.hint.encoder))
    ]
    tokens = torch.randn(2, 3, dtc.unet.config.cross_attention_dim)
    with torch.inference_mode():
        dtc(dtc.unet_input(noisy, masked, fill), torch.tensor(400), tokens, hint)
    for hook in hooks:
        hook.remove()
    assert torch.equal(seen["main"], build_unet_input(layout, noisy, masked, fill))
    assert torch.equal(seen["hint"], build_unet_input(layout, noisy, masked + hint, fill))
