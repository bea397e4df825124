"""A corpus of bad (and awkward but valid) inputs, drawn with Pillow and numpy: nothing is downloaded.

`write_corpus` writes the images and three manifests (catalogue, scenes, pairs) under a root URI and returns the
cases, each with the outcome the pipeline must give it. Every case is one pair: a bad product goes with a good
scene, a bad scene or mask with a good product, so each pair has exactly one thing wrong with it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from PIL import Image

from pipeline.core.storage import S3Config, join, write_bytes
from pipeline.synthetic.images import ellipse_mask, encode, exif_with_orientation, photo, png_header_only
from pipeline.synthetic.samples import draw_product, parquet_bytes

SCENE_SIZE = (160, 120)  # (W, H) of the good scenes
GOOD_BOX = ("40", "30", "110", "100")


@dataclass(frozen=True)
class Case:
    name: str  # what is wrong (or awkward) with the pair
    product_id: str
    scene_id: str
    status: str  # expected: ok | failed
    reason: str | None  # expected error_reason
    variant: str | None = None  # None: the default variant
    size: tuple[int, int] | None = None  # expected (W, H) of an ok output: the upright scene's

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.product_id, self.scene_id, self.variant or "default")


@dataclass(frozen=True)
class Corpus:
    catalogue_uri: str
    scenes_uri: str
    pairs_uri: str
    cases: list[Case]


# ------------------------------------------------------------------------------------------------------ images


def product(size: tuple[int, int] = (200, 240)) -> Image.Image:
    """The same vase on white at every call."""
    return draw_product("vase", random.Random(0), size)


def with_orientation(img: Image.Image, orientation: int) -> bytes:
    return encode(img, "JPEG", quality=92, exif=exif_with_orientation(orientation))


def sixteen_bit(img: Image.Image) -> bytes:
    grey = np.asarray(img.convert("L")).astype(np.uint16) * 257
    return encode(Image.fromarray(grey), "PNG")  # mode I;16


def palette_with_transparency(img: Image.Image) -> bytes:
    p = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return encode(p, "PNG", transparency=0)


def animated_gif(img: Image.Image) -> bytes:
    frames = [img.convert("P"), img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).convert("P")]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def mask(size: tuple[int, int], fill: int | None = None, mode: str = "L") -> bytes:
    if fill is not None:
        return encode(Image.new("L", size, fill), "PNG")
    img = ellipse_mask((size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4), size)
    if mode == "I;16":
        return encode(Image.fromarray(np.asarray(img).astype(np.uint16) * 257), "PNG")
    return encode(img.convert(mode), "PNG")


# ------------------------------------------------------------------------------------------------------ corpus


def write_corpus(root: str, s3: S3Config | None = None) -> Corpus:
    """Write the corpus's files and manifests under `root`; returns the manifests' URIs and the cases."""
    files: dict[str, bytes] = {}
    scene = photo(*SCENE_SIZE, seed=1)
    good_jpeg = encode(product(), "JPEG", quality=92)
    scene_jpeg = encode(scene, "JPEG", quality=92)
    rotated = photo(*SCENE_SIZE, seed=2)  # stored 160x120; with EXIF orientation 6 the upright scene is 120x160

    catalogue: list[dict] = []
    scenes: list[dict] = []
    cases: list[Case] = []

    def add_product(pid: str, name: str | None, data: bytes | None, *, uri: str | None = None) -> None:
        if uri is None:
            uri = join(root, "products", name)
            if data is not None:
                files[uri] = data
        catalogue.append({"product_id": pid, "image_uri": uri, "category": "decor"})

    def add_scene(sid: str, name: str | None, data: bytes | None, *, box=None, mask_name=None, mask_data=None,
                  uri: str | None = None) -> None:
        if uri is None:
            uri = join(root, "scenes", name)
            if data is not None:
                files[uri] = data
        mask_uri = None
        if mask_name is not None:
            mask_uri = join(root, "masks", mask_name)
            if mask_data is not None:
                files[mask_uri] = mask_data
        x0, y0, x1, y1 = box if box is not None else (None,) * 4
        scenes.append({"scene_id": sid, "image_uri": uri, "mask_uri": mask_uri, "x0": x0, "y0": y0, "x1": x1,
                       "y1": y1, "category": "decor"})

    # The good references every bad input is paired with.
    add_product("good", "good.jpg", good_jpeg)
    add_scene("good-box", "good.jpg", scene_jpeg, box=GOOD_BOX)

    # ---- products (with the good scene)
    truncated = good_jpeg[: len(good_jpeg) // 2]
    products = [
        # id, file name, bytes, expected status, reason
        ("p-zero-byte", "zero.jpg", b"", "failed", "decode_error"),
        ("p-truncated", "truncated.jpg", truncated, "failed", "decode_error"),
        ("p-not-an-image", "text.png", b"this is a text file, not a PNG\n" * 20, "failed", "decode_error"),
        ("p-ico-format", "icon.jpg", encode(product((32, 32)), "ICO"), "failed", "decode_error"),
        ("p-cmyk", "cmyk.jpg", encode(product().convert("CMYK"), "JPEG", quality=92), "ok", None),
        ("p-16bit", "sixteen.png", sixteen_bit(product()), "ok", None),
        ("p-grey", "grey.jpg", encode(product().convert("L"), "JPEG", quality=92), "ok", None),
        ("p-palette-transparent", "palette.png", palette_with_transparency(product()), "ok", None),
        ("p-animated", "animated.gif", animated_gif(product()), "ok", None),
        ("p-exif-rotated", "rotated.jpg", with_orientation(product(), 6), "ok", None),
        ("p-1x1", "one.png", encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"), "ok", None),
        ("p-bomb-header", "bomb.png", png_header_only(100_000, 100_000), "failed", "image_too_large"),
        ("p-over-max-pixels", "big.png", png_header_only(8_000, 8_000), "failed", "image_too_large"),
        ("p-missing", "missing.jpg", None, "failed", "fetch_missing"),
    ]
    for pid, name, data, status, reason in products:
        add_product(pid, name, data)
        cases.append(Case(pid, pid, "good-box", status, reason, size=SCENE_SIZE if status == "ok" else None))
    # Locations a manifest must not make a worker fetch.
    for pid, uri in [("p-http-uri", "http://169.254.169.254/latest/meta-data/iam/"),
                     ("p-chained-uri", "simplecache::" + join(root, "products", "good.jpg"))]:
        add_product(pid, None, None, uri=uri)
        cases.append(Case(pid, pid, "good-box", "failed", "fetch_error"))

    # ---- scenes, masks and boxes (with the good product)
    ellipse = mask(SCENE_SIZE)
    scene_cases = [
        # id, scene file, bytes, box, mask file, mask bytes, status, reason, output size
        ("s-zero-byte", "zero.jpg", b"", GOOD_BOX, None, None, "failed", "decode_error", None),
        ("s-truncated", "truncated.jpg", scene_jpeg[: len(scene_jpeg) // 2], GOOD_BOX, None, None, "failed",
         "decode_error", None),
        ("s-not-an-image", "text.jpg", b"<html>not a photo</html>\n" * 10, GOOD_BOX, None, None, "failed",
         "decode_error", None),
        ("s-cmyk", "cmyk.jpg", encode(scene.convert("CMYK"), "JPEG", quality=92), GOOD_BOX, None, None, "ok", None,
         SCENE_SIZE),
        ("s-16bit", "sixteen.png", sixteen_bit(scene), GOOD_BOX, None, None, "ok", None, SCENE_SIZE),
        ("s-grey", "grey.png", encode(scene.convert("L"), "PNG"), GOOD_BOX, None, None, "ok", None, SCENE_SIZE),
        ("s-palette-transparent", "palette.png", palette_with_transparency(scene), GOOD_BOX, None, None, "ok", None,
         SCENE_SIZE),
        ("s-animated", "animated.gif", animated_gif(scene), GOOD_BOX, None, None, "ok", None, SCENE_SIZE),
        ("s-exif-rotated", "rotated.jpg", with_orientation(rotated, 6), None, "rotated-upright.png",
         mask((SCENE_SIZE[1], SCENE_SIZE[0])), "ok", None, (SCENE_SIZE[1], SCENE_SIZE[0])),
        ("s-exif-rotated-mask-stored", "rotated.jpg", None, None, "rotated-stored.png", ellipse, "failed",
         "mask_size_mismatch", None),
        ("s-1x1", "one.png", encode(Image.new("RGB", (1, 1), (90, 90, 90)), "PNG"), ("0", "0", "1", "1"), None, None,
         "ok", None, (1, 1)),
        ("s-bomb-header", "bomb.png", png_header_only(100_000, 100_000), GOOD_BOX, None, None, "failed",
         "image_too_large", None),
        ("s-missing", "missing.jpg", None, GOOD_BOX, None, None, "failed", "fetch_missing", None),
        ("m-ellipse", "good.jpg", None, None, "ellipse.png", ellipse, "ok", None, SCENE_SIZE),
        ("m-16bit", "good.jpg", None, None, "sixteen.png", mask(SCENE_SIZE, mode="I;16"), "ok", None, SCENE_SIZE),
        ("m-rgb", "good.jpg", None, None, "rgb.png", mask(SCENE_SIZE, mode="RGB"), "ok", None, SCENE_SIZE),
        ("m-all-black", "good.jpg", None, None, "black.png", mask(SCENE_SIZE, 0), "failed", "mask_empty", None),
        ("m-all-white", "good.jpg", None, None, "white.png", mask(SCENE_SIZE, 255), "ok", None, SCENE_SIZE),
        ("m-size-mismatch", "good.jpg", None, None, "small.png", mask((100, 100)), "failed", "mask_size_mismatch",
         None),
        ("m-missing", "good.jpg", None, None, "missing.png", None, "failed", "fetch_missing", None),
        ("m-zero-byte", "good.jpg", None, None, "zero.png", b"", "failed", "decode_error", None),
        ("b-outside", "good.jpg", None, ("500", "400", "600", "500"), None, None, "failed", "mask_out_of_bounds",
         None),
        ("b-partly-outside", "good.jpg", None, ("-20", "60", "400", "300"), None, None, "ok", None, SCENE_SIZE),
        ("b-inverted", "good.jpg", None, ("110", "100", "40", "30"), None, None, "failed", "invalid_box", None),
        ("b-zero-area", "good.jpg", None, ("50", "30", "50", "100"), None, None, "failed", "invalid_box", None),
        ("b-not-numbers", "good.jpg", None, ("left", "top", "right", "bottom"), None, None, "failed", "invalid_box",
         None),
        ("b-fractional", "good.jpg", None, ("40.5", "30", "110", "100"), None, None, "failed", "invalid_box", None),
        ("b-nan", "good.jpg", None, ("nan", "30", "110", "100"), None, None, "failed", "invalid_box", None),
        ("b-infinite", "good.jpg", None, ("40", "30", "inf", "100"), None, None, "failed", "invalid_box", None),
    ]
    for sid, name, data, box, mask_name, mask_data, status, reason, size in scene_cases:
        add_scene(sid, name, data, box=box, mask_name=mask_name, mask_data=mask_data)
        cases.append(Case(sid, "good", sid, status, reason, size=size))

    # ---- hostile and awkward ids (good images): every key must stay one escaped segment under the run prefix
    hostile_products = ["../../escape", "a/b/c", "..", ".", "/abs", "with space", "café", "日本語", "%2e%2e%2f",
                        "a%2Fb", "tab\tand\nnewline", "x" * 200]
    for pid in hostile_products:
        add_product(pid, None, None, uri=join(root, "products", "good.jpg"))
        cases.append(Case(f"product id {pid!r}", pid, "good-box", "ok", None, size=SCENE_SIZE))
    for sid in ["../../../scene-escape", "room/../../x", "~user"]:
        add_scene(sid, None, None, box=GOOD_BOX, uri=join(root, "scenes", "good.jpg"))
        cases.append(Case(f"scene id {sid!r}", "good", sid, "ok", None, size=SCENE_SIZE))
    for variant in ["../variant", "v/1"]:
        cases.append(Case(f"variant {variant!r}", "good", "good-box", "ok", None, variant=variant, size=SCENE_SIZE))
    cases.insert(0, Case("reference pair", "good", "good-box", "ok", None, size=SCENE_SIZE))

    for uri, data in files.items():
        write_bytes(uri, data, s3)
    catalogue_uri, scenes_uri, pairs_uri = (join(root, f"{n}.parquet") for n in ("catalogue", "scenes", "pairs"))
    write_bytes(catalogue_uri, parquet_bytes(pa.Table.from_pylist(catalogue)), s3)
    scene_schema = pa.schema([("scene_id", pa.string()), ("image_uri", pa.string()), ("mask_uri", pa.string()),
                              *((c, pa.string()) for c in ("x0", "y0", "x1", "y1")), ("category", pa.string())])
    write_bytes(scenes_uri, parquet_bytes(pa.Table.from_pylist(scenes, schema=scene_schema)), s3)
    pairs = pa.table({
        "product_id": [c.product_id for c in cases],
        "scene_id": [c.scene_id for c in cases],
        "variant": pa.array([c.variant for c in cases], pa.string()),
    })
    write_bytes(pairs_uri, parquet_bytes(pairs), s3)
    return Corpus(catalogue_uri, scenes_uri, pairs_uri, cases)
