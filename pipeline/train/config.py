"""The training job's settings: one pydantic-settings model, the same three sources as every job.

Sections name what they hold; unknown keys are refused and errors name the field. The run folder is
`<output_uri>/<run_id>/`: Ray Train's checkpoints, `metrics.jsonl`, `samples/` (contact sheets) and `config.json`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.core.model_sources import KLEIN_TINY_MODEL
from pipeline.core.provenance import PART_NAMES
from pipeline.core.settings import Dtype, JobSettings, Resolution, Section
from pipeline.core.storage import S3Config


class TrainModelConfig(Section):
    source: str = Field(
        "tiny",
        description="where training starts: a named configuration (tiny, sd15: seeded random weights), a DTC "
        "checkpoint directory, a Paint-by-Example pipeline directory, or an s3:// URI of either",
    )

    @field_validator("source")
    @classmethod
    def _a_dtc(cls, value: str) -> str:
        if value == KLEIN_TINY_MODEL:
            raise ValueError("training makes a DTC; FLUX.2 [klein] is used as published (an inference source only)")
        return value

    dtype: Dtype = Field(
        "auto",
        description="autocast compute precision; weights and optimizer state stay fp32. auto: bf16 on GPU, fp32 "
        "on CPU; fp16 adds a gradient scaler",
    )
    cache_dir: str | None = Field(None, description="node-local cache for an s3:// source")
    gradient_checkpointing: bool = Field(False, description="recompute UNet block activations in backward")


class TrainDataConfig(Section):
    resolution: Resolution = Field(512, ge=64, le=2048, description="training crop size in pixels (the paper: 512)")
    reference_size: int = Field(224, ge=14, le=1024, description="reference image side before the model's processor")
    context_margin: float = Field(0.25, ge=0.0, le=4.0, description="context around the region, as at inference")
    dilate_px: int = Field(
        8, ge=0, le=256, description="the context window keeps this margin around the region, as at inference"
    )
    max_pixels: int = Field(50_000_000, ge=1, description="decoded-size bound for any input image")
    reference_padding: float = Field(
        0.1, ge=0.0, le=1.0, description="self-supervised pairs: the region's crop grows by this share of its size"
    )
    flip_p: float = Field(0.5, ge=0.0, le=1.0, description="reference augmentation: horizontal flip probability")
    rotate_deg: float = Field(20.0, ge=0.0, le=180.0, description="reference augmentation: rotation up to +- this")
    blur_p: float = Field(0.3, ge=0.0, le=1.0, description="reference augmentation: Gaussian blur probability")
    perspective_p: float = Field(0.3, ge=0.0, le=1.0, description="reference augmentation: perspective warp chance")
    mask_grow: float = Field(
        0.3, ge=0.0, le=1.0, description="mask augmentation: the box grows by up to this share of the free space"
    )
    irregular_mask_p: float = Field(
        0.5, ge=0.0, le=1.0, description="mask augmentation: probability of a jittered outline instead of the box"
    )


class TrainLoopConfig(Section):
    steps: int = Field(1000, ge=1, description="optimizer steps in all (a restarted job continues to this count)")
    batch_size: int = Field(4, ge=1, le=1024, description="samples per worker per micro-batch")
    grad_accum: int = Field(1, ge=1, le=1024, description="micro-batches per optimizer step")
    trainable: Literal["paper", "all_but_vae"] | list[str] = Field(
        "paper",
        description="paper: main decoder, projection (+ unconditional token), hint adapter, hint encoder, FiLM; "
        "all_but_vae: everything but the VAE (a model from scratch); or a list of part names",
    )
    reference_dropout: float = Field(
        0.2, ge=0.0, le=1.0, description="share of samples whose reference tokens become the unconditional token"
    )
    perceptual_weight: float = Field(0.0, ge=0.0, description="weight of the VGG perceptual loss (0: epsilon MSE)")
    vgg_weights: str | None = Field(
        None, description="VGG16 `features` weights (safetensors, torchvision key names) for the perceptual loss"
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="data order, augmentation, noise and dropout derive from it")
    max_loss: float = Field(
        10.0, gt=0.0, description="a step loss above this (or NaN) stops the job; the epsilon MSE of any sane model "
        "stays near 1"
    )

    @field_validator("trainable")
    @classmethod
    def _known_parts(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list):
            unknown = [p for p in value if p not in PART_NAMES]
            if unknown or not value:
                raise ValueError(f"unknown part names {unknown} (known: {', '.join(PART_NAMES)})" if unknown
                                 else "needs at least one part name")
        return value


class OptimConfig(Section):
    lr: float = Field(1e-5, gt=0.0, description="AdamW learning rate after warm-up (the paper: 1e-5)")
    warmup_steps: int = Field(500, ge=0, description="linear warm-up from 0; constant after")
    weight_decay: float = Field(0.01, ge=0.0)
    beta1: float = Field(0.9, ge=0.0, lt=1.0)
    beta2: float = Field(0.999, ge=0.0, lt=1.0)
    eps: float = Field(1e-8, gt=0.0)
    grad_clip: float | None = Field(1.0, gt=0.0, description="clip the global gradient norm; null: no clipping")


class CheckpointSettings(Section):
    every_steps: int = Field(1000, ge=1, description="a checkpoint every N steps, and one at the end")
    keep: int | None = Field(3, ge=1, description="checkpoints kept in the run folder (null: all)")


class LogConfig(Section):
    progress_every: int = Field(50, ge=1, description="a progress line (and a metrics.jsonl row) every N steps")
    sheet_every: int = Field(1000, ge=1, description="a validation contact sheet every K steps, and one at the end")
    sheet_pairs: int = Field(4, ge=1, le=64, description="validation pairs on the sheet (split=val rows first)")
    sheet_steps: int = Field(20, ge=1, le=1000, description="DDIM steps for the sheet's outputs")
    sheet_guidance: float = Field(5.0, ge=0.0, le=50.0)


class TrainComputeConfig(Section):
    num_workers: int = Field(1, ge=1, description="Ray Train workers (DDP ranks)")
    use_gpu: bool = Field(False, description="one GPU per worker (the training worker type of ray_cluster.yaml)")
    cpus_per_worker: float = Field(1.0, gt=0.0)
    accelerator_resource: str | None = Field(
        None, description="a custom resource each GPU worker also requests, to land on the training node type "
        "(ray_cluster.yaml's train_gpu_worker advertises train_gpu); null: any GPU node"
    )
    cpus_per_data_task: float = Field(1.0, gt=0.0, description="CPUs per Ray Data decode/augment task")
    max_failures: int = Field(3, ge=-1, description="restarts from the last checkpoint after a worker dies")


class TrainConfig(JobSettings):
    """Everything one training run needs; the same run_id resumes from the run's latest checkpoint."""

    manifest_uri: str = Field(description="training manifest (Parquet): image_uri, mask_uri or box, reference_uri")
    output_uri: str = Field(description="runs folder: the run's checkpoints and records go to <output_uri>/<run_id>/")
    model: TrainModelConfig = TrainModelConfig()
    data: TrainDataConfig = TrainDataConfig()
    train: TrainLoopConfig = TrainLoopConfig()
    optim: OptimConfig = OptimConfig()
    checkpoint: CheckpointSettings = CheckpointSettings()
    log: LogConfig = LogConfig()
    compute: TrainComputeConfig = TrainComputeConfig()
    s3: S3Config = S3Config()

    @model_validator(mode="after")
    def _perceptual_needs_weights(self) -> TrainConfig:
        if self.train.perceptual_weight > 0 and not self.train.vgg_weights:
            raise ValueError("train.perceptual_weight > 0 needs train.vgg_weights (a safetensors file)")
        return self

    @property
    def run_uri(self) -> str:
        return f"{self.output_uri.rstrip('/')}/{self.run_id}"

    @property
    def global_batch(self) -> int:
        """Samples per optimizer step over all workers: the unit of the data position."""
        return self.train.batch_size * self.train.grad_accum * self.compute.num_workers
