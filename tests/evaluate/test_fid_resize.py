"""FID's two resize conventions against their reference forms: `pytorch_fid` is torch's F.interpolate (bilinear,
align_corners=False, no antialiasing) of the cut, as pytorch-fid resizes inside the network; `clean` is clean-fid's
PIL bicubic of each channel as floats. Both leave a 299 px cut as it is; a bad setting is exit status 2."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from jobs.evaluate import main as evaluate_main
from pipeline.evaluate.crops import fid_input
from pipeline.evaluate.encoders import load_embedder
from pipeline.evaluate.inception import random_fid_inception
from pipeline.evaluate.weights import INCEPTION, INCEPTION_SIZE

# (image width, height), the cut's box: shrunk, enlarged, shrunk in one direction only, the whole image.
CUTS = [((800, 600), (37, 20, 677, 500)), ((160, 120), (10, 15, 100, 85)), ((1000, 400), (0, 50, 1000, 350)),
        ((523, 311), None)]


def _photo(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Smooth gradients with texture: the kind of image a bicubic filter does not overshoot much."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 6, 3)
    channels = [127 + 100 * np.sin(x / (17 + 9 * c) + phase[c]) * np.cos(y / (23 + 5 * c)) for c in range(3)]
    return Image.fromarray(np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8))


def _cut(image: Image.Image, bbox) -> np.ndarray:
    return np.array(image.crop(bbox) if bbox else image)


def _torch_bilinear(pixels: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float()
    y = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False, antialias=False)
    return y[0].permute(1, 2, 0).numpy()


def _clean_fid(pixels: np.ndarray) -> np.ndarray:
    """clean-fid's `make_resizer("PIL", False, "bicubic", (299, 299))`, clipped as its current release clips."""
    channels = [np.asarray(Image.fromarray(pixels[:, :, c].astype(np.float32), mode="F").resize(
        (INCEPTION_SIZE, INCEPTION_SIZE), resample=Image.BICUBIC)).reshape(INCEPTION_SIZE, INCEPTION_SIZE, 1)
        for c in range(3)]
    return np.concatenate(channels, axis=2).clip(0, 255).astype(np.float32)


@pytest.mark.parametrize(("size", "bbox"), CUTS)
def test_pytorch_fid_resize_is_torchs_bilinear_interpolation(size, bbox):
    image = _photo(size)
    got = fid_input(image, bbox, INCEPTION_SIZE, "pytorch_fid")
    assert got.shape == (299, 299, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, _torch_bilinear(_cut(image, bbox)), rtol=0, atol=1e-3)
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 256, (*size[::-1], 3), dtype=np.uint8))
    np.testing.assert_allclose(fid_input(noise, bbox, INCEPTION_SIZE, "pytorch_fid"),
                               _torch_bilinear(_cut(noise, bbox)), rtol=0, atol=1e-3)


@pytest.mark.parametrize(("size", "bbox"), CUTS)
def test_clean_resize_is_clean_fids_pil_bicubic(size, bbox):
    image = _photo(size)
    got = fid_input(image, bbox, INCEPTION_SIZE, "clean")
    assert got.shape == (299, 299, 3) and got.dtype == np.float32
    np.testing.assert_array_equal(got, _clean_fid(_cut(image, bbox)))
    # PIL's bicubic resize of the uint8 image, but for its rounding to integers after each of its two passes
    # (clean-fid resizes without it).
    rounded = np.asarray((image.crop(bbox) if bbox else image).resize((299, 299), Image.Resampling.BICUBIC))
    assert np.abs(got - rounded).max() <= 1.5


def test_both_leave_a_299_pixel_cut_as_it_is_and_differ_elsewhere():
    image = _photo((400, 400))
    exact = (50, 60, 349, 359)
    for resize in ("pytorch_fid", "clean"):
        np.testing.assert_array_equal(fid_input(image, exact, INCEPTION_SIZE, resize), _cut(image, exact))
    # One-pixel stripes shrunk threefold: the bilinear shrink without antialiasing keeps a stripe pattern that is not
    # in the image at that scale; the antialiased bicubic shrink averages them to grey.
    stripes = np.zeros((897, 897, 3), np.uint8)
    stripes[:, ::2] = 255
    aliased = fid_input(Image.fromarray(stripes), None, INCEPTION_SIZE, "pytorch_fid")
    smoothed = fid_input(Image.fromarray(stripes), None, INCEPTION_SIZE, "clean")
    assert aliased.std() > 60 and smoothed.std() < 10 and abs(smoothed.mean() - 127.5) < 5


def test_pytorch_fid_features_are_the_networks_own_resize_of_the_native_cut(one_torch_thread):
    """What pytorch-fid computes: the cut at its own size into the network, which resizes it (FIDInception.forward);
    the features of the resized input through the evaluation's embedder agree."""
    image, bbox = _photo((480, 360), seed=2), (20, 30, 420, 330)
    embedder = load_embedder("inception", "tiny", INCEPTION, device="cpu")
    ours = embedder.embed(fid_input(image, bbox, INCEPTION_SIZE, "pytorch_fid")[None])
    native = torch.from_numpy(_cut(image, bbox)).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        reference = random_fid_inception()(native * 2 - 1).numpy()
    np.testing.assert_allclose(ours, reference, rtol=1e-3, atol=1e-4)


def test_bad_report_and_fid_settings_are_exit_status_2(capsys):
    args = ["--set", "run_folder=runs/x", "--set", "encoders.clip=tiny"]
    assert evaluate_main([*args, "--set", "distribution.fid_resize=bilinear"]) == 2
    assert "distribution.fid_resize: Input should be 'pytorch_fid' or 'clean'" in capsys.readouterr().err
    assert evaluate_main([*args, "--set", "report.sorted_pages=-1"]) == 2
    assert "report.sorted_pages: Input should be greater than or equal to 0" in capsys.readouterr().err
