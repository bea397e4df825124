"""CLIP-I and DINO-I from tiny random encoders saved as transformers saves them, against a hand computation on the
same crops; encoder folders holding only pickle weights are refused."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, Dinov2Config, Dinov2Model

from pipeline.core.errors import JobError
from pipeline.core.settings import ConfigError, load_settings
from pipeline.evaluate.config import EvalConfig
from pipeline.evaluate.embeddings import Encode, prepare_item
from pipeline.evaluate.metrics import cosine_score
from pipeline.evaluate.weights import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, check_source
from pipeline.model.errors import CheckpointError


@pytest.fixture(scope="module")
def encoder_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoders")
    torch.manual_seed(0)
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, image_size=64,
        patch_size=16, projection_dim=12)).eval()
    dino = Dinov2Model(Dinov2Config(hidden_size=24, mlp_ratio=2, num_hidden_layers=2, num_attention_heads=4,
                                    image_size=56, patch_size=14)).eval()
    clip.save_pretrained(root / "clip", safe_serialization=True)
    dino.save_pretrained(root / "dinov2", safe_serialization=True)
    return {"clip": (root / "clip", clip), "dinov2": (root / "dinov2", dino)}


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _hand_embedding(model, pixels: np.ndarray, mean, std, kind: str) -> np.ndarray:
    x = (pixels.astype(np.float64) / 255.0 - np.array(mean)) / np.array(std)
    x = torch.tensor(x.transpose(2, 0, 1)[None], dtype=torch.float32)
    with torch.no_grad():
        out = model(pixel_values=x)
    return (out.image_embeds if kind == "clip" else out.pooler_output)[0].numpy()


def test_clip_i_and_dino_i_equal_a_hand_computation_on_the_same_crops(tmp_path, encoder_folders):
    rng = np.random.default_rng(0)
    output = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    product = rng.integers(0, 256, (70, 50, 3), dtype=np.uint8)
    (tmp_path / "out.png").write_bytes(_png(output))
    (tmp_path / "product.png").write_bytes(_png(product))
    box = (30, 20, 100, 75)
    cfg = EvalConfig.model_validate({"run_folder": str(tmp_path), "encoders": {
        "clip": str(encoder_folders["clip"][0]), "dinov2": str(encoder_folders["dinov2"][0])}})
    encoders = {kind: (str(folder), check_source(kind, str(folder), None))
                for kind, (folder, _) in encoder_folders.items()}
    assert {k: p.size for k, (_, p) in encoders.items()} == {"clip": 64, "dinov2": 224}
    sizes = {kind: p.size for kind, (_, p) in encoders.items()}
    rows = [
        prepare_item({"item": 0, "role": "generated", "uri": str(tmp_path / "out.png"), "crop": "region",
                      "mask_uri": None, "box": list(box)}, sizes, 10**8, None, fid_resize="pytorch_fid"),
        prepare_item({"item": 1, "role": "reference", "uri": str(tmp_path / "product.png"), "crop": "whole",
                      "mask_uri": None, "box": None}, sizes, 10**8, None, fid_resize="pytorch_fid"),
    ]
    assert [r["status"] for r in rows] == ["ok", "ok"]
    batch = {k: np.stack([r[k] for r in rows]) if isinstance(rows[0][k], np.ndarray)
             else np.array([r[k] for r in rows]) for k in rows[0]}
    embedded = Encode(cfg, encoders)(batch)

    norms = {"clip": (CLIP_MEAN, CLIP_STD), "dinov2": (IMAGENET_MEAN, IMAGENET_STD)}
    for kind, (_, model) in encoder_folders.items():
        size = sizes[kind]
        # Paint-by-Example's cut: the output's box region resized to the square, the whole product to the square.
        crop = np.asarray(Image.fromarray(output[box[1]:box[3], box[0]:box[2]]).resize((size, size),
                                                                                       Image.Resampling.BILINEAR))
        ref = np.asarray(Image.fromarray(product).resize((size, size), Image.Resampling.BICUBIC))
        a = _hand_embedding(model, crop, *norms[kind], kind)
        b = _hand_embedding(model, ref, *norms[kind], kind)
        by_hand = 100.0 * float(a @ b) / float(np.linalg.norm(a) * np.linalg.norm(b))
        vectors = embedded[f"vectors_{kind}"]
        assert float(cosine_score(vectors[0], vectors[1])) == pytest.approx(by_hand, abs=1e-3)


def test_a_missing_image_is_that_items_failed_row(tmp_path):
    row = prepare_item({"item": 3, "role": "generated", "uri": str(tmp_path / "nope.png"), "crop": "whole",
                        "mask_uri": None, "box": None}, {"clip": 8, "inception": 299}, 10**8, None,
                       fid_resize="clean")
    assert (row["status"], row["reason"]) == ("failed", "fetch_missing")
    # Placeholders of the shape and type a good row has, so the block's columns stay uniform.
    assert row["pixels_clip"].shape == (8, 8, 3) and row["pixels_clip"].dtype == np.uint8
    assert row["pixels_inception"].shape == (299, 299, 3) and row["pixels_inception"].dtype == np.float32


def test_pickle_weights_are_refused(tmp_path, encoder_folders):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_bytes((encoder_folders["clip"][0] / "config.json").read_bytes())
    (folder / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(JobError, match="pickle"):
        check_source("clip", str(folder), None)
    from pipeline.evaluate.encoders import load_embedder

    with pytest.raises(CheckpointError, match="pickle"):
        load_embedder("clip", str(folder), check_source("clip", "tiny", None))
    with pytest.raises(ConfigError, match="encoders.dinov2.*pickle"):
        load_settings(EvalConfig, None, ["run_folder=x", "encoders.dinov2=s3://m/dinov2.pth"], environment=False)
    fid_only = load_settings(EvalConfig, None, ["run_folder=x", "encoders.inception=/w/fid.safetensors"],
                             environment=False)
    assert (fid_only.encoders.inception, fid_only.encoders.clip, fid_only.encoders.dinov2) == \
        ("/w/fid.safetensors", None, None)
    with pytest.raises(ConfigError, match="nothing to evaluate with"):
        load_settings(EvalConfig, None, ["run_folder=x", "encoders.dtype=fp32"], environment=False)
