"""FLUX.2 [klein] through diffusers' own pipeline: a tiny random klein saved in the public folder's layout, compared
with `Flux2KleinInpaintPipeline` called directly on the same inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import s3fs
import torch
from diffusers import Flux2KleinInpaintPipeline

from pipeline.model import klein as klein_module
from pipeline.model.klein import KleinBatch, KleinParams, KleinSampler, build_klein_sampler, load_klein
from pipeline.model.klein_build import build_tiny_klein, save_klein

PARAMS = KleinParams(steps=4, guidance=1.0, strength=1.0)


@pytest.fixture(scope="module")
def klein_dir(tmp_path_factory) -> Path:
    return save_klein(build_tiny_klein(), tmp_path_factory.mktemp("klein") / "FLUX.2-klein-tiny")


def _batch(n: int = 3, size: int = 64, prompts: tuple[str, ...] = ("a sofa", "a lamp", "a sofa")) -> KleinBatch:
    rng = np.random.default_rng(0)
    mask = np.zeros((n, size, size), bool)
    mask[:, 16:48, 8:40] = True
    return KleinBatch(scene=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), mask=mask,
                      reference=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                      seeds=np.array([11, 12, 13][:n], np.int64), prompts=list(prompts[:n]))


def test_the_saved_folder_has_the_public_layout(klein_dir):
    index = json.loads((klein_dir / "model_index.json").read_text())
    assert index["_class_name"] == "Flux2KleinPipeline" and index["is_distilled"] is True
    for component in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (klein_dir / component).is_dir(), component
    shards = json.loads((klein_dir / "text_encoder" / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(set(shards.values())) > 1 and not (klein_dir / "text_encoder" / "model.safetensors").exists()
    assert not [p for p in klein_dir.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]


def test_generation_equals_the_pipeline_called_directly(klein_dir):
    torch.manual_seed(0)
    sampler = build_klein_sampler(str(klein_dir), PARAMS)
    batch = _batch()
    ours = sampler.generate_unit(batch)
    direct = Flux2KleinInpaintPipeline.from_pretrained(klein_dir, dtype=torch.float32)
    direct.set_progress_bar_config(disable=True)
    arguments = sampler.call_arguments(batch)
    theirs = direct(prompt=list(batch.prompts), **arguments).images
    assert ours.shape == (3, 64, 64, 3)
    assert np.abs(ours - theirs).max() <= 1e-4
    assert np.array_equal(sampler.generate(batch), (theirs * 255).round().astype(np.uint8))
    # Two distinct prompts, encoded in one call and reused by the next batch.
    assert sampler.encoder_calls == 1
    sampler.generate_unit(_batch(prompts=("a lamp", "a sofa", "a lamp")))
    assert sampler.encoder_calls == 1


def test_a_pairs_image_depends_on_its_seed_not_its_batch(klein_dir):
    sampler = build_klein_sampler(str(klein_dir), PARAMS)
    batch = _batch()
    together = sampler.generate_unit(batch)
    alone = sampler.generate_unit(KleinBatch(scene=batch.scene[1:2], mask=batch.mask[1:2],
                                             reference=batch.reference[1:2], seeds=batch.seeds[1:2],
                                             prompts=batch.prompts[1:2]))
    assert np.abs(alone[0] - together[1]).max() <= 1e-4
    other_seed = sampler.generate_unit(KleinBatch(scene=batch.scene[1:2], mask=batch.mask[1:2],
                                                  reference=batch.reference[1:2], seeds=np.array([99]),
                                                  prompts=batch.prompts[1:2]))
    assert np.abs(other_seed[0] - together[1]).max() > 1e-2


def test_known_prompts_are_encoded_when_the_sampler_starts(klein_dir):
    pipe = load_klein(klein_dir, device=torch.device("cpu"), dtype=torch.float32)
    sampler = KleinSampler(pipe, PARAMS, model_id="k", prompts=["a sofa", "a lamp", "a sofa"])
    assert sampler.encoder_calls == 1
    sampler.generate_unit(_batch())
    assert sampler.encoder_calls == 1


def test_the_prompt_cache_is_bounded(klein_dir, monkeypatch):
    monkeypatch.setattr(klein_module, "PROMPT_CACHE_ENTRIES", 2)
    pipe = load_klein(klein_dir, device=torch.device("cpu"), dtype=torch.float32)
    sampler = KleinSampler(pipe, PARAMS, model_id="k")
    sampler.generate_unit(_batch(prompts=("a", "b", "c")))
    assert len(sampler._encoded) == 2


def test_cpu_runs_fp32_and_fp16_is_refused_for_klein():
    assert klein_module.klein_dtype(torch.device("cpu"), None) == torch.float32
    assert klein_module.klein_dtype(torch.device("cuda"), None) == torch.bfloat16
    with pytest.raises(klein_module.CheckpointError, match="fp16"):
        klein_module.klein_dtype(torch.device("cuda"), torch.float16)


@pytest.mark.integration
def test_loads_from_s3_through_the_node_cache(klein_dir, s3_store, tmp_path):
    bucket, options = s3_store
    fs = s3fs.S3FileSystem(**options)
    for path in sorted(p for p in klein_dir.rglob("*") if p.is_file()):
        fs.put_file(str(path), f"{bucket}/klein/{path.relative_to(klein_dir).as_posix()}")
    remote = build_klein_sampler(f"s3://{bucket}/klein", PARAMS, cache_dir=str(tmp_path), storage_options=options)
    local = build_klein_sampler(str(klein_dir), PARAMS)
    batch = _batch(n=1)
    assert np.array_equal(remote.generate(batch), local.generate(batch))
    assert remote.model_id == f"s3://{bucket}/klein"
