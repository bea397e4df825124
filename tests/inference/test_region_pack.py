"""A region packed by prepare_pair gives composite_pair exactly what the mask image or box gives it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipeline.core.errors import INTERNAL_ERROR, PairError
from pipeline.imaging.masks import Region
from pipeline.imaging.settings import ImageSettings
from pipeline.inference.postprocess import composite_pair
from pipeline.inference.preprocess import prepare_pair
from pipeline.synthetic.images import encode, exif_with_orientation, photo


def ellipse_mask(size, box):
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).ellipse(box, fill=200)
    mask.putpixel((box[0], box[1]), 100)  # below the threshold: not region
    return mask


@pytest.mark.parametrize("bbox", [(10, 20, 70, 50), (0, 0, 120, 90), (100, 70, 120, 90)])
def test_pack_unpack_same_region(bbox):
    region = Region.from_mask(ellipse_mask((120, 90), bbox))
    back = Region.unpack(region.pack())
    assert back.size == region.size and back.bbox == region.bbox
    for box in [(0, 0, 120, 90), (-5, -5, 130, 100), region.bbox, (30, 30, 31, 31)]:
        assert np.array_equal(back.crop(box), region.crop(box)), box
    window = (-10, -10, 130, 130)
    assert np.array_equal(back.resized_crop(window, 64), region.resized_crop(window, 64))


def test_pack_box_region_is_a_header():
    region = Region.from_box((3, 4, 50, 60), (100, 80))
    data = region.pack()
    assert len(data) < 64
    back = Region.unpack(data)
    assert back.mask is None and back.bbox == region.bbox and back.size == region.size


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
@pytest.mark.parametrize("orientation", [1, 6])
def test_composite_with_packed_region_equals_composite_with_mask(fmt, orientation):
    settings = ImageSettings(resolution=64, output_format=fmt)
    scene = encode(photo(160, 120), "JPEG", quality=90, exif=exif_with_orientation(orientation))
    upright = (120, 160) if orientation == 6 else (160, 120)
    mask = encode(ellipse_mask(upright, (30, 40, 90, 100)), "PNG")
    product = encode(photo(50, 70, seed=1), "JPEG")
    pair = prepare_pair(scene, product, mask_bytes=mask, box=None, settings=settings)
    generated = np.full((64, 64, 3), (255, 0, 255), np.uint8)
    by_mask, size, _ = composite_pair(scene, generated, pair.window, mask_bytes=mask, box=None, settings=settings)
    packed, size2, _ = composite_pair(scene, generated, pair.window, region=pair.region, settings=settings)
    assert by_mask == packed and size == size2 == upright


def test_packed_region_of_another_scene_is_an_internal_error():
    settings = ImageSettings(resolution=64, output_format="png")
    scene = encode(photo(160, 120), "JPEG")
    other = Region.from_box((0, 0, 10, 10), (100, 100)).pack()
    generated = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(PairError) as info:
        composite_pair(scene, generated, (0, 0, 120, 120), region=other, settings=settings)
    assert info.value.reason == INTERNAL_ERROR
    with pytest.raises(PairError) as info:
        composite_pair(scene, generated, (0, 0, 120, 120), region=b"garbage-bytes-that-are-long-enough-xx",
                       settings=settings)
    assert info.value.reason == INTERNAL_ERROR


def test_packed_region_survives_numpy_fixed_width_bytes():
    """numpy "S" arrays drop trailing NUL bytes; a batch of rows may hold the regions that way."""
    regions = (Region.from_box((3, 4, 50, 60), (100, 80)), Region.from_mask(ellipse_mask((64, 64), (0, 0, 40, 40))))
    for region in regions:
        packed = np.array([region.pack(), b"x"])[0]
        back = Region.unpack(packed)
        assert back.bbox == region.bbox and np.array_equal(back.crop((0, 0, 64, 64)), region.crop((0, 0, 64, 64)))
