"""Checkpoints: bit-exact round trip, pickles refused, corrupt or missing files named, the SD + DINOv2 start."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import Dinov2Config, Dinov2Model

from pipeline.core.errors import JobError
from pipeline.model import CheckpointError, DTCSampler, SamplingParams, load_dtc, save_checkpoint
from pipeline.model.checkpoint import build_from_sd_inpaint

from ._helpers import make_batch

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _no_unpickling(monkeypatch):
    """Nothing in the model package may ever unpickle a file."""

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", refuse)


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def test_round_trip_is_bit_exact(tiny_dtc, tiny_checkpoint):
    loaded = load_dtc(str(tiny_checkpoint), device=CPU)
    original, restored = tiny_dtc.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for name, tensor in original.items():
        assert tensor.dtype == restored[name].dtype and torch.equal(tensor, restored[name]), name
    public = lambda config: {k: v for k, v in dict(config).items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.unet.config) == public(tiny_dtc.unet.config)
    assert public(loaded.vae.config) == public(tiny_dtc.vae.config)
    assert loaded.scheduler_config == tiny_dtc.scheduler_config
    assert loaded.image_processor.to_dict() == tiny_dtc.image_processor.to_dict()
    assert loaded.default_resolution == 256 and loaded.model_id == str(tiny_checkpoint)
    batch, params = make_batch(1, 64), SamplingParams(steps=3)
    assert (DTCSampler(loaded, params).generate(batch) == DTCSampler(tiny_dtc, params).generate(batch)).all()


def test_layout(tiny_checkpoint):
    index = json.loads((tiny_checkpoint / "dtc.json").read_text())
    assert index["format_version"] == 1 and index["model_type"] == "diffuse-to-choose"
    for path in [
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "image_encoder/config.json",
        "image_encoder/model.safetensors",
        "hint/config.json",
        "hint/model.safetensors",
        "image_processor/preprocessor_config.json",
        "scheduler/scheduler_config.json",
    ]:
        assert (tiny_checkpoint / path).is_file(), path
    # The UNet and VAE folders are plain diffusers folders.
    unet = UNet2DConditionModel.from_pretrained(str(tiny_checkpoint / "unet"), use_safetensors=True)
    assert unet.config.in_channels == 9
    vae = AutoencoderKL.from_pretrained(str(tiny_checkpoint / "vae"), use_safetensors=True)
    assert vae.config.latent_channels == 4


def test_pickle_files_refused(tiny_checkpoint, tmp_path):
    ckpt = _copy(tiny_checkpoint, tmp_path)
    weights = ckpt / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(CheckpointError, match=r"diffusion_pytorch_model\.bin is a pickle-format checkpoint, refused"):
        load_dtc(str(ckpt), device=CPU)
    single = tmp_path / "model.ckpt"
    single.write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(CheckpointError, match=r"model\.ckpt is a pickle-format"):
        load_dtc(str(single), device=CPU)


def test_truncated_weights_named(tiny_checkpoint, tmp_path):
    ckpt = _copy(tiny_checkpoint, tmp_path)
    weights = ckpt / "hint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=str(weights)) as err:
        load_dtc(str(ckpt), device=CPU)
    assert isinstance(err.value, JobError) and err.value.exit_code == 2


def test_missing_component_named(tiny_checkpoint, tmp_path):
    ckpt = _copy(tiny_checkpoint, tmp_path)
    (ckpt / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"missing file .*vae/diffusion_pytorch_model\.safetensors"):
        load_dtc(str(ckpt), device=CPU)
    shutil.rmtree(ckpt / "image_processor")
    (ckpt / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(
        (tiny_checkpoint / "vae" / "diffusion_pytorch_model.safetensors").read_bytes()
    )
    with pytest.raises(CheckpointError, match=r"missing file .*preprocessor_config\.json"):
        load_dtc(str(ckpt), device=CPU)


def test_mismatched_weights_and_versions_refused(tiny_checkpoint, tmp_path):
    ckpt = _copy(tiny_checkpoint, tmp_path)
    config = json.loads((ckpt / "unet" / "config.json").read_text())
    config["block_out_channels"] = [32, 32]
    (ckpt / "unet" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"unet/diffusion_pytorch_model\.safetensors: weights do not fit"):
        load_dtc(str(ckpt), device=CPU)
    (ckpt / "dtc.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(CheckpointError, match="format_version 99 is not supported"):
        load_dtc(str(ckpt), device=CPU)


def test_unknown_sources_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no such model source"):
        load_dtc(str(tmp_path / "nope"), device=CPU)
    with pytest.raises(CheckpointError, match="not a DTC checkpoint"):
        load_dtc(str(tmp_path), device=CPU)
    with pytest.raises(CheckpointError, match="model hubs are never contacted"):
        load_dtc("hf://someone/some-model", device=CPU)


def test_save_refuses_non_empty_target(tiny_dtc, tiny_checkpoint):
    with pytest.raises(CheckpointError, match="already exists"):
        save_checkpoint(tiny_dtc, tiny_checkpoint)


def test_file_uri(tiny_dtc, tiny_checkpoint):
    loaded = load_dtc(tiny_checkpoint.as_uri(), device=CPU)
    assert torch.equal(loaded.unet.conv_in.weight, tiny_dtc.unet.conv_in.weight)


def test_sd_inpaint_plus_dinov2_start(tiny_dtc, tmp_path):
    sd_dir, dino_dir = tmp_path / "sd-inpaint", tmp_path / "dinov2"
    tiny_dtc.unet.save_pretrained(str(sd_dir / "unet"), safe_serialization=True)
    tiny_dtc.vae.save_pretrained(str(sd_dir / "vae"), safe_serialization=True)
    torch.manual_seed(3)
    dino = Dinov2Model(Dinov2Config(hidden_size=48, num_hidden_layers=2, num_attention_heads=2, patch_size=14)).eval()
    dino.save_pretrained(str(dino_dir), safe_serialization=True)

    dtc = build_from_sd_inpaint(sd_dir, dino_dir, device=CPU, dtype=torch.float32, model_id="sd+dino")
    for name, tensor in dino.state_dict().items():
        assert torch.equal(dtc.image_encoder.backbone.state_dict()[name], tensor), name
    assert dtc.image_encoder.proj.in_features == 48 and dtc.image_encoder.proj.out_features == 32
    assert not dtc.image_encoder.uncond_vector.any()
    assert dtc.default_resolution == 256
    tokens = dtc.image_encoder(torch.randn(1, 3, 224, 224))
    assert tokens.shape == (1, 257, 32)
    sample = torch.randn(1, 9, 32, 32)
    with torch.inference_mode():
        ours = dtc(sample, torch.tensor(300), tokens, torch.randn(1, 4, 32, 32))
        base = tiny_dtc.unet(sample, torch.tensor(300), encoder_hidden_states=tokens).sample
    assert (ours - base).abs().max().item() <= 1e-5
    with pytest.raises(CheckpointError, match="model_type"):
        build_from_sd_inpaint(sd_dir, sd_dir / "unet", device=CPU, dtype=torch.float32, model_id="x")


def test_legacy_feature_extractor_config(tmp_path):
    """The public Paint-by-Example pipeline's preprocessor config predates image_processor_type."""
    from pipeline.model.checkpoint import load_image_processor

    legacy = {
        "crop_size": 224,
        "do_center_crop": True,
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3,
        "size": 224,
    }
    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps(legacy))
    processor = load_image_processor(path)
    pixels = processor(images=[np.zeros((300, 260, 3), np.uint8)], return_tensors="pt").pixel_values
    assert pixels.shape == (1, 3, 224, 224)
    path.write_text(json.dumps({**legacy, "feature_extractor_type": "SomethingElse"}))
    with pytest.raises(CheckpointError, match="SomethingElse.* is not supported"):
        load_image_processor(path)


def test_the_driver_knows_every_model_name():
    """The driver checks model.source without importing torch, from its own list of names: keep it complete."""
    from pipeline.core.model_sources import KLEIN_TINY_MODEL, MODEL_NAMES, PACKAGED_MODELS
    from pipeline.model.configs import NAMED_CONFIGS

    assert set(MODEL_NAMES) == {"noop", KLEIN_TINY_MODEL, *NAMED_CONFIGS, *PACKAGED_MODELS}


def _only_fp16(folder: Path) -> None:
    assert any(p.name.endswith(".fp16.safetensors") for p in folder.iterdir()), sorted(folder.iterdir())
    assert not any(p.name.endswith(".safetensors") and ".fp16." not in p.name for p in folder.iterdir())


def test_fp16_variant_folders_load(tiny_dtc, pbe_pipeline, pbe_dir, tmp_path):
    """Public checkpoints' fp16 downloads hold only `<name>.fp16.safetensors`: every loader reads them."""
    import copy

    from ._helpers import build_tiny_dinov2

    sd_dir, dino_dir = tmp_path / "sd-inpaint", tmp_path / "dinov2"
    for name in ("unet", "vae"):
        model = copy.deepcopy(getattr(tiny_dtc, name)).half()
        model.save_pretrained(str(sd_dir / name), safe_serialization=True, variant="fp16")
        _only_fp16(sd_dir / name)
    dino = build_tiny_dinov2()
    dino.half().save_pretrained(str(dino_dir), safe_serialization=True, variant="fp16")
    _only_fp16(dino_dir)
    dtc = build_from_sd_inpaint(sd_dir, dino_dir, device=CPU, dtype=torch.float32, model_id="fp16")
    assert dtc.dtype == torch.float32
    assert torch.equal(dtc.unet.conv_in.weight, tiny_dtc.unet.conv_in.weight.half().float())
    assert torch.equal(dtc.vae.encoder.conv_in.weight, tiny_dtc.vae.encoder.conv_in.weight.half().float())
    for name, tensor in dino.state_dict().items():
        assert torch.equal(dtc.image_encoder.backbone.state_dict()[name], tensor.float()), name

    # A DTC checkpoint whose component folders hold only fp16 files (as an fp16 copy of one would).
    half = build_from_sd_inpaint(sd_dir, dino_dir, device=CPU, dtype=torch.float16, model_id="fp16")
    ckpt = save_checkpoint(half, tmp_path / "ckpt")
    for weights in ckpt.glob("*/*.safetensors"):
        weights.rename(weights.with_name(weights.name.replace(".safetensors", ".fp16.safetensors")))
    loaded = load_dtc(str(ckpt), device=CPU)
    assert loaded.dtype == torch.float32 and loaded.input_layout == "sd_inpaint"
    for name, tensor in half.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor.float()), name

    # A Paint-by-Example pipeline saved with variant="fp16" (diffusers' and transformers' own folder layouts).
    pbe16 = tmp_path / "pbe-fp16"
    pbe_pipeline.save_pretrained(str(pbe16), safe_serialization=True, variant="fp16")
    for name in ("unet", "vae", "image_encoder"):
        _only_fp16(pbe16 / name)
    from_variant, plain = load_dtc(str(pbe16), device=CPU), load_dtc(str(pbe_dir), device=CPU)
    for name, tensor in plain.state_dict().items():
        assert torch.equal(from_variant.state_dict()[name], tensor), name


def test_scheduler_config_without_clip_sample_does_not_clip(tiny_checkpoint, tmp_path):
    from diffusers import DDIMScheduler

    ckpt = _copy(tiny_checkpoint, tmp_path)
    path = ckpt / "scheduler" / "scheduler_config.json"
    config = json.loads(path.read_text())
    del config["clip_sample"]
    path.write_text(json.dumps(config))
    assert DDIMScheduler.from_config(config).config.clip_sample is True  # diffusers' default, which SD never used
    dtc = load_dtc(str(ckpt), device=CPU)
    assert dtc.scheduler_config["clip_sample"] is False
    assert DTCSampler(dtc, SamplingParams("ddim"))._scheduler.config.clip_sample is False
    # A schedule that asks for clipping keeps it.
    path.write_text(json.dumps({**config, "clip_sample": True}))
    assert DTCSampler(load_dtc(str(ckpt), device=CPU), SamplingParams("ddim"))._scheduler.config.clip_sample is True


def test_the_demo_model_loads_the_tensors_its_files_hold(tmp_path):
    """The packaged checkpoint (format_version 1, written before diffusers saved the UNet and VAE): every tensor of
    every component file (fp16) is the loaded model's, exactly (in fp32, CPU inference's dtype), and every weight of
    the model comes from a file; saved again it keeps the same files, keys and values."""
    from safetensors.torch import load_file

    from pipeline.core.model_sources import PACKAGED_MODELS

    root = PACKAGED_MODELS["demo"]
    files = {
        "unet": "unet/diffusion_pytorch_model.safetensors",
        "vae": "vae/diffusion_pytorch_model.safetensors",
        "image_encoder": "image_encoder/model.safetensors",
        "hint": "hint/model.safetensors",
    }
    stored = {f"{part}.{k}": v for part, name in files.items() for k, v in load_file(str(root / name)).items()}
    dtc = load_dtc("demo", device=CPU)
    loaded = dtc.state_dict()
    assert loaded.keys() == stored.keys()
    for name, tensor in stored.items():
        assert loaded[name].dtype == torch.float32 and torch.equal(loaded[name], tensor.float()), name

    again = save_checkpoint(dtc, tmp_path / "again")
    for part, name in files.items():
        assert load_file(str(again / name)).keys() == load_file(str(root / name)).keys(), part
    reloaded = load_dtc(str(again), device=CPU).state_dict()
    assert all(torch.equal(reloaded[name], tensor.float()) for name, tensor in stored.items())


def test_the_driver_check_of_a_weights_location(s3_store, tmp_path):
    """pipeline.core.weights.check_weights_location, torch-free, as the drivers call it (the inference job's words)."""
    import s3fs

    from pipeline.core.storage import S3Config
    from pipeline.core.weights import check_weights_location

    def check(source: str, s3: S3Config | None = None, hint: str = ""):
        return check_weights_location(source, s3, where=f"model.source {source}", what="checkpoint", missing_hint=hint)

    with pytest.raises(CheckpointError, match=r"model\.source s3://b/w\.BIN: s3://b/w\.BIN is a pickle-format "
                                              r"checkpoint, refused .*safe_serialization=True"):
        check("s3://b/w.BIN")
    with pytest.raises(CheckpointError, match=r"model\.source tinyy: no checkpoint there and it is not a model name"):
        check("tinyy", hint=" and it is not a model name (tiny, ...)")
    folder = tmp_path / "ckpt"
    (folder / "unet").mkdir(parents=True)
    with pytest.raises(CheckpointError, match=rf"model\.source {folder}: no safetensors weights under it"):
        check(str(folder))
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(CheckpointError, match=r"unet/diffusion_pytorch_model\.bin is a pickle-format checkpoint"):
        check(str(folder))
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    found = check(folder.as_uri())
    assert found.is_dir and len(found.files) == 2

    bucket, options = s3_store
    s3 = S3Config(endpoint_url=options["endpoint_url"])
    s3fs.S3FileSystem(**options).pipe_file(f"{bucket}/old/model.ckpt", b"\x80\x04")
    with pytest.raises(CheckpointError, match=rf"{bucket}/old/model\.ckpt is a pickle-format checkpoint, refused"):
        check(f"s3://{bucket}/old", s3)
    with pytest.raises(CheckpointError, match=rf"model\.source s3://{bucket}/absent: no checkpoint there$"):
        check(f"s3://{bucket}/absent", s3)
    unreachable = S3Config(endpoint_url="http://127.0.0.1:9", max_attempts=1)
    with pytest.raises(CheckpointError, match=r"model\.source s3://b/m: cannot be reached: \w+"):
        check("s3://b/m", unreachable)
