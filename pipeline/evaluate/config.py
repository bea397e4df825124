"""The evaluation job's settings: which finished run, which encoders, the real set, the statistics, the page.

Loaded like every job's (pipeline.core.settings): a YAML or JSON file, `TRYALL_*` variables, `--set` overrides.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.core.model_sources import MODEL_CACHE_ENV
from pipeline.core.settings import Dtype, JobSettings, Section
from pipeline.core.storage import S3Config
from pipeline.core.weights import is_pickle, pickle_refused
from pipeline.evaluate.crops import FidResize


class EncodersConfig(Section):
    clip: str | None = Field(
        None, description="CLIP vision weights for CLIP-I: a CLIPVisionModelWithProjection folder as transformers "
        "saves it, by path, file:// or s3://; `tiny`: random weights (demos and tests only)")
    dinov2: str | None = Field(
        None, description="DINOv2 weights for DINO-I, FD-DINOv2 and KID: a Dinov2Model folder, by path, file:// or "
        "s3://; `tiny`: random weights")
    inception: str | None = Field(
        None, description="the FID Inception-v3's weights for FID (pytorch-fid's pt_inception-2015-12-05 converted "
        "to safetensors): a .safetensors file or a folder holding model.safetensors by path or file://, the folder on "
        "s3://; "
        "`tiny`: random weights")
    dtype: Dtype = Field("auto", description="CLIP and DINOv2 precision; auto: fp16 on a GPU, fp32 on CPU (the FID "
                         "Inception always runs in fp32, as pytorch-fid does)")
    cache_dir: str | None = Field(
        default_factory=lambda: os.environ.get(MODEL_CACHE_ENV) or None,
        description="node-local cache for s3:// weights; default from TRYALL_MODEL_CACHE_DIR")

    @field_validator("clip", "dinov2", "inception")
    @classmethod
    def _no_pickle(cls, value: str | None) -> str | None:
        if value is not None and is_pickle(value):
            raise ValueError(str(pickle_refused(value)))
        return value

    @model_validator(mode="after")
    def _at_least_one(self) -> EncodersConfig:
        if self.clip is None and self.dinov2 is None and self.inception is None:
            raise ValueError("set encoders.clip, encoders.dinov2 and/or encoders.inception: there is nothing to "
                             "evaluate with")
        return self


class RealSetConfig(Section):
    uri: str | None = Field(
        None, description="a Parquet manifest of real images (column image_uri) for FD-DINOv2, KID and FID; null: the "
        "scenes' own regions (each scene of the run cut to its region)")
    max_images: int | None = Field(None, ge=2, description="use at most this many real images (the first ones)")


class DistributionConfig(Section):
    kid_subset_size: int = Field(1000, ge=2, description="KID's subset size (torch-fidelity's default)")
    kid_subsets: int = Field(100, ge=1, description="KID subsets; sets no larger than a subset are scored once")
    seed: int = Field(0, ge=0, description="seed of KID's subsets")
    fid_resize: FidResize = Field(
        "pytorch_fid", description="how FID's 299 px inputs are made: pytorch_fid (bilinear without antialiasing, as "
        "pytorch-fid and most published FIDs) or clean (clean-fid's antialiased bicubic); summary.json says which")


class ABConfig(Section):
    test: Literal["wilcoxon", "t"] = Field("wilcoxon", description="paired test: Wilcoxon signed-rank or paired t")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="bootstrap confidence level")
    resamples: int = Field(10_000, ge=100, le=1_000_000, description="bootstrap resamples")
    seed: int = Field(0, ge=0, description="bootstrap seed (same seed, same interval)")


class EvalComputeConfig(Section):
    batch_size: int = Field(32, ge=1, le=1024, description="images per encoder call")
    actors_min: int = Field(1, ge=1, description="encoder actors (one per GPU) at least")
    actors_max: int = Field(1, ge=1, description="encoder actors at most")
    gpus_per_actor: float | None = Field(
        None, ge=0.0, description="GPUs per encoder actor; null: 1 when the cluster has GPUs, else 0 (CPU)")
    cpus_per_task: float = Field(1.0, gt=0.0, description="CPUs per fetch-and-cut task")
    cpus_per_actor: float = Field(1.0, ge=0.0, description="CPUs per encoder actor")

    @model_validator(mode="after")
    def _min_le_max(self) -> EvalComputeConfig:
        if self.actors_min > self.actors_max:
            raise ValueError(f"actors_min ({self.actors_min}) exceeds actors_max ({self.actors_max})")
        return self


class ReportConfig(Section):
    write: bool = Field(True, description="write report/index.html after the metrics")
    rows_per_page: int = Field(200, ge=10, le=500, description="pairs per page of the review page")
    sorted_pages: int = Field(
        5, ge=0, description="pages written of each sort but the listing order (product, scene), which has them all: "
        "the worst rows_per_page x sorted_pages pairs by each metric, A/B difference and seam ΔE; 0: the listing "
        "order alone")
    thumbnail_px: int = Field(192, ge=32, le=1024, description="longest side of the page's thumbnails")


class RunFolderSettings(JobSettings):
    """A job over one finished run folder; its run_id (the submission's name) defaults to the folder's name."""

    run_id: str = Field("", description="names the submission (evaluate-<run_id>); empty: the run folder's name")
    run_folder: str = Field(description="the finished run, <output_uri>/<run_id> (a local path or s3://)")
    s3: S3Config = S3Config()

    @model_validator(mode="before")
    @classmethod
    def _run_id_from_folder(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("run_id") and isinstance(data.get("run_folder"), str):
            data = {**data, "run_id": data["run_folder"].rstrip("/").rpartition("/")[2]}
        return data

    @property
    def run_uri(self) -> str:
        return self.run_folder.rstrip("/")


class EvalConfig(RunFolderSettings):
    """Evaluate one finished run folder: per-pair CLIP-I / DINO-I, FD-DINOv2, KID and FID per variant, paired A/B."""

    encoders: EncodersConfig
    real: RealSetConfig = RealSetConfig()
    distribution: DistributionConfig = DistributionConfig()
    ab: ABConfig = ABConfig()
    compute: EvalComputeConfig = EvalComputeConfig()
    report: ReportConfig = ReportConfig()


class ReportJobConfig(RunFolderSettings):
    """Write the review page of one finished run folder."""

    report: ReportConfig = ReportConfig()
