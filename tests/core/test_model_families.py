"""Which family a model folder is, its sampling defaults, and the folders that must stop a job before it starts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.core.model_families import (
    DTC,
    DTC_DEFAULTS,
    KLEIN,
    KLEIN_BASE_DEFAULTS,
    KLEIN_DISTILLED_DEFAULTS,
    KLEIN_TINY_DEFAULTS,
    model_defaults,
)
from pipeline.core.weights import CheckpointError, check_weights_location


def _folder(tmp_path: Path, files: dict[str, object]) -> Path:
    root = tmp_path / "model"
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content)) if isinstance(content, dict) else path.write_bytes(content)
    return root


KLEIN_FILES = {
    "model_index.json": {"_class_name": "Flux2KleinPipeline", "is_distilled": True,
                         **{c: ["x", "y"] for c in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")}},
    "transformer/config.json": {}, "transformer/diffusion_pytorch_model.safetensors": b"x",
    "vae/config.json": {}, "vae/diffusion_pytorch_model.safetensors": b"x",
    "text_encoder/config.json": {},
    "text_encoder/model.safetensors.index.json": {"weight_map": {"a": "model-00001-of-00002.safetensors",
                                                                 "b": "model-00002-of-00002.safetensors"}},
    "text_encoder/model-00001-of-00002.safetensors": b"x", "text_encoder/model-00002-of-00002.safetensors": b"x",
    "tokenizer/tokenizer.json": {}, "tokenizer/tokenizer_config.json": {},
    "scheduler/scheduler_config.json": {},
}


def _defaults(root: Path):
    location = check_weights_location(str(root), None, where="model.source m", what="checkpoint")
    return model_defaults(str(root), location, where="model.source m")


def test_named_models_and_folders_tell_their_family(tmp_path):
    assert model_defaults("tiny", None, where="w") == DTC_DEFAULTS
    assert model_defaults("klein-tiny", None, where="w") == KLEIN_TINY_DEFAULTS
    assert _defaults(_folder(tmp_path, KLEIN_FILES)) == KLEIN_DISTILLED_DEFAULTS
    assert KLEIN_DISTILLED_DEFAULTS.family == KLEIN and KLEIN_DISTILLED_DEFAULTS.steps == 4
    shutil.rmtree(tmp_path / "model")
    base = {**KLEIN_FILES, "model_index.json": {**KLEIN_FILES["model_index.json"], "is_distilled": False}}
    assert _defaults(_folder(tmp_path, base)) == KLEIN_BASE_DEFAULTS


def test_a_dtc_checkpoint_carries_its_resolution_and_sampling(tmp_path):
    root = _folder(tmp_path, {"dtc.json": {"default_resolution": 64, "sampling": {"steps": 20, "guidance": 2.0}},
                              "unet/diffusion_pytorch_model.safetensors": b"x"})
    found = _defaults(root)
    assert (found.family, found.resolution, found.steps, found.guidance) == (DTC, 64, 20, 2.0)
    assert found.scheduler == DTC_DEFAULTS.scheduler and found.reference_size == 224
    assert model_defaults("demo", check_weights_location(
        str(Path(__file__).parents[2] / "pipeline/model/weights/demo"), None, where="w", what="c"), where="w"
    ).resolution == 64


@pytest.mark.parametrize(("change", "message"), [
    (lambda f: [f.pop(k) for k in ("vae/config.json", "vae/diffusion_pytorch_model.safetensors")],
     "the vae/ folder is missing or empty"),
    (lambda f: f.update({"transformer/diffusion_pytorch_model.bin": f.pop(
        "transformer/diffusion_pytorch_model.safetensors")}), "diffusion_pytorch_model.bin is a pickle-format"),
    (lambda f: f.pop("text_encoder/model-00002-of-00002.safetensors"),
     "names shards that are missing: model-00002-of-00002.safetensors"),
    (lambda f: f.update({"model_index.json": {**f["model_index.json"], "_class_name": "FluxFillPipeline"}}),
     "names 'FluxFillPipeline', which tryall does not run"),
    (lambda f: f.update({"model_index.json": {"_class_name": "Flux2KleinPipeline"}}),
     "lists no transformer, vae, text_encoder, tokenizer, scheduler"),
    (lambda f: [f.pop("scheduler/scheduler_config.json"), f.update({"scheduler/other.json": {}})],
     "scheduler_config.json is missing"),
])
def test_a_bad_klein_folder_is_refused_with_its_reason(tmp_path, change, message):
    files = dict(KLEIN_FILES)
    change(files)
    with pytest.raises(CheckpointError, match=message):
        _defaults(_folder(tmp_path, files))


def test_a_folder_of_neither_family_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="neither a DTC checkpoint"):
        _defaults(_folder(tmp_path, {"unet.safetensors": b"x"}))
