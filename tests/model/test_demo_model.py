"""The packaged demo model: what the README says it is, and still far better than the untrained model.

Seconds on a CPU, so a change to the model code, the sampler or the preprocessing cannot silently break the model
`make demo` shows. The full measurement (64 pairs) is `python -m benchmarks --parts demo_quality`.
"""

from __future__ import annotations

import pytest
import torch
import yaml

from benchmarks.demo_quality import QualityPlan, bench_demo_quality, held_out_crops
from pipeline.core.model_sources import DEMO_MODEL, PACKAGED_MODELS
from pipeline.core.provenance import hint_branch_trained, read_provenance
from pipeline.inference.checks import check_model_source
from pipeline.inference.config import RunConfig
from pipeline.model import load_dtc

DEMO_CONFIG = "configs/train-demo.yaml"


def test_the_checkpoint_is_small_and_safetensors_only():
    files = [p for p in PACKAGED_MODELS[DEMO_MODEL].rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".json", ".safetensors"}
    assert sum(p.stat().st_size for p in files) <= 10 * 2**20


def test_its_provenance_records_the_recipe():
    provenance = read_provenance(DEMO_MODEL)
    assert hint_branch_trained(provenance)
    assert provenance["base"] == {"kind": "random", "config": "small", "seed": 0}
    with open(DEMO_CONFIG) as f:
        recipe = yaml.safe_load(f)
    assert provenance["training"]["steps"] == recipe["train"]["steps"]
    assert provenance["training"]["data_uri"] == recipe["manifest_uri"]
    assert "vae" in provenance["trained_parts"]  # by the autoencoder stage, the training's "previous" record
    assert provenance["training"]["previous"] is not None


def test_the_run_accepts_it_as_a_model_source(tmp_path):
    cfg = RunConfig.model_validate({"run_id": "r", "catalogue_uri": "c.parquet", "scenes_uri": "s.parquet",
                                    "output_uri": str(tmp_path), "model": {"source": DEMO_MODEL}})
    check_model_source(cfg)
    dtc = load_dtc(DEMO_MODEL, device=torch.device("cpu"))
    assert (dtc.model_id, dtc.default_resolution, dtc.dtype) == (DEMO_MODEL, 64, torch.float32)


@pytest.fixture(scope="module")
def quality():
    plan = QualityPlan(sources=(DEMO_MODEL, "tiny"), pairs=6, steps=10, torch_threads=1)
    return bench_demo_quality(plan, held_out_crops(plan.pairs, plan.resolution))


def test_it_fills_held_out_regions_far_better_than_the_untrained_model(quality):
    # On 64 pairs at 20 steps: +10.2 dB over tiny, +5.1 dB over the mean-colour fill (benchmarks/README.md); these
    # 6 pairs at 10 steps gave +10.8 and +4.9. The bar is +6 dB over the untrained model.
    psnr = {name: stats["mean"] for name, stats in quality["region_psnr_db"].items()}
    assert quality["demo_minus_tiny_db"]["mean"] >= 6.0
    assert psnr[DEMO_MODEL] >= psnr["context_mean_fill"] + 2.0
    assert psnr[DEMO_MODEL] > psnr[f"{DEMO_MODEL}_hint_zeroed"]  # the trained hint branch helps
