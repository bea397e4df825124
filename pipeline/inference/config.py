"""The inference jobs' settings (nightly, backfill, ab, demo): one `RunConfig`, loaded by pipeline.core.settings.

Precedence, highest first: command-line `--set a.b=value`, environment (`TRYALL_SAMPLING__STEPS=20`), the file,
the defaults. Credentials are not configuration: S3 access comes from the standard AWS chain only.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.core.model_families import DTC, KLEIN, KLEIN_MULTIPLE, KLEIN_SCHEDULER, ModelDefaults
from pipeline.core.model_sources import MODEL_CACHE_ENV
from pipeline.core.sampling import DEFAULT_GUIDANCE, DEFAULT_SCHEDULER, DEFAULT_STEPS, Scheduler
from pipeline.core.settings import ConfigError, Dtype, JobSettings, Resolution, Section, load_settings
from pipeline.core.storage import S3Config
from pipeline.imaging.color_match import ColorMatch
from pipeline.imaging.settings import ImageSettings
from pipeline.inference.cost import G5_XLARGE_ON_DEMAND_USD_PER_HOUR
from pipeline.inference.prompts import DEFAULT_PROMPT, check_template

__all__ = ["MODEL_CACHE_ENV", "ConfigError", "RunConfig", "load_config"]

# The image stages' defaults are theirs (pipeline.imaging.settings); the settings below only expose them.
_IMAGE = ImageSettings()


class PairingConfig(Section):
    strategy: Literal["pairs", "same_category", "all"] = Field(
        "same_category", description="pairs: the pairs manifest (pairs_uri); same_category: scenes_per_product "
        "scenes of the product's category, chosen by a stable hash; all: every product with every scene"
    )
    scenes_per_product: int = Field(1, ge=1, le=1000, description="scenes per product (same_category)")
    salt: str = Field("", description="changes which scenes the stable hash picks, without changing anything else")


class ModelConfig(Section):
    source: str | None = Field(
        None, description="the model: a checkpoint's local path or s3:// URI, or a name (demo; tiny, small, sd15 and "
        "noop are random or no weights, for tests and benchmarks); required"
    )
    allow_random_weights: bool = Field(
        False, description="let nightly, backfill and ab run a random-weight source (tiny, small, sd15, klein-tiny, "
        "noop)"
    )
    family: Literal["auto", "dtc", "flux2-klein"] = Field(
        "auto", description="the model family; auto: told from the source's files (dtc.json: dtc; a diffusers "
        "folder whose model_index.json names Flux2KleinPipeline: flux2-klein)"
    )
    dtype: Dtype = Field("auto", description="model precision; auto: fp16 on a GPU, fp32 on CPU")
    cache_dir: str | None = Field(
        default_factory=lambda: os.environ.get(MODEL_CACHE_ENV) or None,
        description="node-local model cache (weights are fetched once per node); default from TRYALL_MODEL_CACHE_DIR",
    )
    compile: bool = Field(False, description="torch.compile the denoiser (each new batch size compiles first)")
    channels_last: bool = Field(False, description="channels-last memory format for the convolutional modules")


class SamplingConfig(Section):
    """How images are sampled. Each model carries its own defaults (`MODEL_DEFAULTED`): a field the settings do not
    name takes the model's value when the run starts (`RunConfig.with_model_defaults`), so these defaults are only
    what a model without any (a random DTC) uses."""

    scheduler: Scheduler = Field(DEFAULT_SCHEDULER, description="the DTC sampler (dpmpp: DPM-Solver++); FLUX.2 "
                                 "[klein] always samples with its own flow-matching scheduler")
    steps: int = Field(DEFAULT_STEPS, ge=1, le=1000, description="denoising steps per image; default: the model's "
                       "(DTC: the paper's 40; the demo model: 20; distilled klein: 4)")
    guidance: float = Field(DEFAULT_GUIDANCE, ge=0.0, le=50.0, description="classifier-free guidance scale; default: "
                            "the model's (DTC: the paper's 5; distilled klein: 1, i.e. none)")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="run-level seed; each pair's seed derives from it")
    resolution: Resolution = Field(_IMAGE.resolution, ge=64, le=2048, description="model crop size in pixels; "
                                   "default: the model's (DTC: the checkpoint's, the paper's 512; klein: 1024)")
    reference_size: int = Field(_IMAGE.reference_size, ge=16, le=2048, description="the product reference's side in "
                                "pixels; default: the model's (DTC: its image encoder's 224; klein: 512)")
    strength: float = Field(1.0, gt=0.0, le=1.0, description="FLUX.2 [klein] only: how much of the crop is noised "
                            "(1: all of it, as for inserting a product)")
    prompt: str = Field(DEFAULT_PROMPT, min_length=1, max_length=2000, description="FLUX.2 [klein] only: the prompt "
                        "template over catalogue fields {category} and {title} (a catalogue's title column, else "
                        "the category)")

    @field_validator("prompt")
    @classmethod
    def _known_fields(cls, value: str) -> str:
        check_template(value)
        return value


# What a model's defaults fill when the settings leave them unset.
MODEL_DEFAULTED = ("scheduler", "steps", "guidance", "resolution", "reference_size", "strength")


class OutputConfig(Section):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["jpeg", "png", "webp"] = Field(_IMAGE.output_format,
                                                   description="encoding of the composited images")
    quality: int = Field(_IMAGE.output_quality, ge=1, le=100, description="JPEG/WebP quality; WebP 100 is lossless")


class ImageConfig(Section):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_pixels: int = Field(_IMAGE.max_pixels, ge=1, description="decoded-size bound for any input image")
    context_margin: float = Field(
        _IMAGE.context_margin, ge=0.0, le=4.0, description="scene context around the region in the model's crop, "
        "per side, as a share of the region's longer side"
    )
    dilate_px: int = Field(_IMAGE.dilate_px, ge=0, le=256,
                           description="the region is grown by this many pixels before paste-back")
    feather_px: int = Field(_IMAGE.feather_px, ge=0, le=256,
                            description="feathering lies inside the dilation: at most dilate_px")
    color_match: ColorMatch = Field(_IMAGE.color_match, description="correct the generated crop's colours to the "
                                    "scene's before paste-back, from the crop's context around the region: poisson "
                                    "(a smooth local correction, the best measured), affine, poly2, mean_std (one "
                                    "map for the whole crop), none (paste as the model returned it)")

    @model_validator(mode="after")
    def _feather_inside_dilation(self) -> ImageConfig:
        if self.feather_px > self.dilate_px:
            raise ValueError(f"feather_px ({self.feather_px}) must not exceed dilate_px ({self.dilate_px})")
        return self


class QualityConfig(Section):
    """Checks of each pair's paste-back that a nightly can act on: a failed check flags the pair (its row's
    `quality_flags`, counted in the summary); the pair stays `ok`, so nothing is lost and downstream filters."""

    seam_delta_e_max: float = Field(
        6.0, gt=0.0, description="flag `seam` when the seam's mean CIEDE2000 (seam_delta_e) exceeds this; 2.3 is "
        "about a just noticeable difference"
    )
    region_delta_e_min: float = Field(
        2.0, ge=0.0, description="flag `nothing_inserted` when the region's mean CIEDE2000 against the scene "
        "(region_delta_e) is below this: the model returned the scene"
    )
    retries: int = Field(
        0, ge=0, le=8, description="sample a pair flagged seam or nothing_inserted again, up to this many times, "
        "with seeds derived from its own, and keep the best attempt (the row records attempts)"
    )


class ComputeConfig(Section):
    batch_size: int = Field(4, ge=1, le=256, description="pairs per model call")
    gpu_actors_min: int = Field(1, ge=1, description="inference actors kept running (one per GPU)")
    gpu_actors_max: int = Field(1, ge=1, description="inference actors the pool may grow to")
    gpus_per_actor: float = Field(1.0, ge=0.0, description="1 on GPU nodes; 0 runs the model actors on CPU")
    cpus_per_task: float = Field(1.0, gt=0.0, description="CPUs reserved by each preprocess/postprocess task")
    cpus_per_actor: float = Field(1.0, ge=0.0, description="CPUs reserved by each inference actor")
    max_task_retries: int = Field(
        3,
        ge=0,
        description="retries of work whose worker process died (a crash, an out-of-memory kill, a lost node): an "
        "inference actor's batch (Ray's max_task_retries; the actor itself restarts without limit) and a CPU task's "
        "block (Ray's max_retries). A pair that kills its worker every time costs max_task_retries + 1 attempts, "
        "then its block's pairs get `worker_lost` rows",
    )
    in_flight_mib: int = Field(
        512,
        ge=16,
        description="object-store memory (MiB, the whole cluster) that one pass's blocks in flight may hold: Ray "
        "Data's resource limit, so its backpressure holds the CPU stages back while the GPUs and the postprocess "
        "stage catch up, and the first metadata part comes as soon on a catalogue as on a sample",
    )
    segment_pairs: int = Field(
        50_000,
        ge=1,
        description="pairs per Ray Data execution: a pass runs as consecutive executions of at most this many "
        "pairs (whole plan parts), since Ray Data keeps some state per block in the driver until an execution "
        "ends; each starts its inference actors anew (the model is loaded again), so raise it when loading is slow",
    )
    max_errored_blocks: int = Field(
        10,
        ge=0,
        description="blocks (up to 16 pairs each) that one Ray Data pass may lose after their retries; one more "
        "stops the job (a systemic failure: a bad node, GPU driver or model, not a poison pair)",
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> ComputeConfig:
        if self.gpu_actors_min > self.gpu_actors_max:
            raise ValueError(f"gpu_actors_min ({self.gpu_actors_min}) exceeds gpu_actors_max ({self.gpu_actors_max})")
        return self


class RecordConfig(Section):
    # A metadata part is written every part_rows rows or part_seconds, whichever comes first: what an interrupted
    # run loses (and a rerun computes again) is at most that much. Small values only for tests and tiny runs.
    part_rows: int = Field(1000, ge=1, description="rows per metadata Parquet part (at most)")
    part_seconds: float = Field(60.0, gt=0.0, description="longest time finished rows wait before being written")


class CostConfig(Section):
    gpu_hourly_usd: float = Field(G5_XLARGE_ON_DEMAND_USD_PER_HOUR, gt=0.0, description="price of one GPU hour for "
                                  "summary.json's cost per 1000 images; default: g5.xlarge on-demand, us-east-1")


_VARIANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class SelectionConfig(Section):
    """Which catalogue products the run takes, before pairing. The defaults take the whole catalogue.

    `shard_count`/`shard_index` split the (selected) catalogue by a stable hash of product_id: shards 0..n-1 of the
    same catalogue are disjoint and together cover it, so n submissions (each its own run_id) can run side by side.
    """

    categories: list[str] | None = Field(None, min_length=1, description="only products of these categories")
    product_ids: list[str] | None = Field(None, min_length=1, description="only these products")
    product_ids_uri: str | None = Field(None, description="a Parquet file with a product_id column: only these")
    shard_count: int = Field(1, ge=1, le=100_000, description="split the selected catalogue into this many shards")
    shard_index: int = Field(0, ge=0, description="this run's shard, 0 <= shard_index < shard_count")
    incremental: bool | None = Field(
        None,
        description="only products new or changed since the last finished run under output_uri; "
        "unset: the job decides (nightly: true, backfill and ab: false)",
    )

    @field_validator("shard_index")
    @classmethod
    def _index_below_count(cls, value: int, info: Any) -> int:
        count = info.data.get("shard_count")
        if count is not None and value >= count:
            raise ValueError(f"must be less than shard_count ({count})")
        return value

    @property
    def covers_catalogue(self) -> bool:
        """True when nothing but `incremental` narrows the catalogue (the run sees every product)."""
        return not (self.categories or self.product_ids or self.product_ids_uri) and self.shard_count == 1


class VariantConfig(Section):
    """One arm of an A/B run: a name (its images go under images/<name>/) and overrides of model and sampling."""

    name: str = Field(description="the variant's name: images/<name>/ and the rows' variant column")
    model: dict[str, Any] = Field(default_factory=dict, description="overrides of the run's model section")
    sampling: dict[str, Any] = Field(default_factory=dict, description="overrides of the run's sampling section")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not _VARIANT_NAME.match(value):
            raise ValueError("must be 1-64 characters of letters, digits, '.', '_' or '-', starting with one of the "
                             "first two")
        return value

    @field_validator("sampling")
    @classmethod
    def _same_seed(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "seed" in value:
            raise ValueError("seed cannot differ between variants: every variant uses the same seed for a pair, so "
                             "comparisons are paired (set sampling.seed for the whole run)")
        return value


def _merged(section: BaseModel, overrides: dict[str, Any], where: str) -> BaseModel:
    """`section` with `overrides` applied and validated again; errors name `where.<field>`. What neither sets stays
    unset (a model's default may still fill it)."""
    try:
        return type(section).model_validate({**section.model_dump(exclude_unset=True), **overrides})
    except ValidationError as exc:
        lines = [
            f"{where}.{'.'.join(str(p) for p in err['loc']) or '(section)'}: {err['msg']}"
            + ("" if isinstance(err.get("input"), dict) else f" (got {err.get('input')!r})")
            for err in exc.errors()
        ]
        raise ValueError("; ".join(lines)) from None


class RunConfig(JobSettings):
    """Everything one inference run needs. Output keys depend only on run_id, variant and pair."""

    catalogue_uri: str = Field(description="the catalogue manifest (Parquet: product_id, image_uri, category)")
    scenes_uri: str = Field(description="the scenes manifest (Parquet: scene_id, image_uri, mask_uri or a box)")
    pairs_uri: str | None = Field(None, description="an explicit pairs manifest (product_id, scene_id); sets "
                                  "pairing.strategy to pairs")
    output_uri: str = Field(description="where run folders go: <output_uri>/<run_id>/")
    pairing: PairingConfig = PairingConfig()
    model: ModelConfig = Field(default_factory=ModelConfig)  # a factory: cache_dir reads the environment now
    sampling: SamplingConfig = SamplingConfig()
    output: OutputConfig = OutputConfig()
    image: ImageConfig = ImageConfig()
    compute: ComputeConfig = ComputeConfig()
    s3: S3Config = S3Config()
    record: RecordConfig = RecordConfig()
    cost: CostConfig = CostConfig()
    quality: QualityConfig = QualityConfig()
    selection: SelectionConfig = SelectionConfig()
    variants: list[VariantConfig] = Field(
        default_factory=list, description="A/B arms; empty: one arm named 'default' with the run's model and sampling"
    )
    retry_failed: bool = Field(False, description="on a rerun, compute pairs that failed before again")
    progress_interval_s: float = Field(10.0, gt=0.0, description="seconds between progress lines in the job log")

    @field_validator("variants")
    @classmethod
    def _variants_valid(cls, value: list[VariantConfig], info: Any) -> list[VariantConfig]:
        names = [v.name for v in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"variant names must be unique; repeated: {', '.join(dupes)}")
        problems = []
        for i, variant in enumerate(value):  # each variant's merged sections must be valid on their own
            for section in ("model", "sampling"):
                base = info.data.get(section)
                try:
                    if base is not None:
                        _merged(base, getattr(variant, section), f"variants.{i}.{section}")
                except ValueError as exc:
                    problems.append(str(exc))
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @model_validator(mode="after")
    def _pairs_need_manifest(self) -> RunConfig:
        if self.pairing.strategy == "pairs" and not self.pairs_uri:
            raise ValueError("pairing.strategy 'pairs' needs pairs_uri")
        if self.pairs_uri and self.pairing.strategy != "pairs":
            self.pairing = self.pairing.model_copy(update={"strategy": "pairs"})
        return self

    @property
    def run_uri(self) -> str:
        return f"{self.output_uri.rstrip('/')}/{self.run_id}"

    @property
    def image_settings(self) -> ImageSettings:
        """The image stages' settings: a view of `sampling.resolution`, `image` and `output`, never a copy."""
        return _image_settings(self.sampling.resolution, self.sampling.reference_size, self.image, self.output)

    @property
    def scheduler_name(self) -> str:
        """The sampler the images are made with, for the metadata: klein has its own, whatever `sampling` says."""
        return KLEIN_SCHEDULER if self.model.family == KLEIN else self.sampling.scheduler

    def with_model_defaults(self, defaults: dict[str, ModelDefaults]) -> RunConfig:
        """The run with every variant's model family set and its unset sampling fields taken from its model's
        `defaults` (by variant name, as `variant_names`). ConfigError when a setting does not apply to the family."""
        if not self.variants:
            family = defaults["default"].family
            sampling, _ = _resolved(self.model, self.sampling, {}, defaults["default"], "")
            return self.model_copy(update={"model": self.model.model_copy(update={"family": family}),
                                           "sampling": sampling})
        variants = []
        for variant in self.variants:
            where = f"variants.{variant.name}."
            merged_model = _merged(self.model, variant.model, f"{where}model")
            _, filled = _resolved(merged_model, self.sampling, variant.sampling, defaults[variant.name], where)
            variants.append(variant.model_copy(update={
                "model": {**variant.model, "family": defaults[variant.name].family},
                "sampling": {**variant.sampling, **filled},
            }))
        return self.model_copy(update={"variants": variants})

    def variant_names(self) -> list[str]:
        """The run's variants in order; `["default"]` when it defines none."""
        return [v.name for v in self.variants] or ["default"]

    def for_variant(self, name: str) -> RunConfig:
        """The configuration one variant computes with: the run's, with the variant's model and sampling overrides."""
        if not self.variants:
            return self
        variant = next((v for v in self.variants if v.name == name), None)
        if variant is None:
            raise KeyError(f"no variant named {name!r}")
        return self.model_copy(update={
            "model": _merged(self.model, variant.model, f"variants.{name}.model"),
            "sampling": _merged(self.sampling, variant.sampling, f"variants.{name}.sampling"),
        })



def _resolved(model: ModelConfig, sampling: SamplingConfig, overrides: dict[str, Any], defaults: ModelDefaults,
              where: str) -> tuple[SamplingConfig, dict[str, Any]]:
    """The sampling section with the model's defaults where neither the run's sampling nor the variant's `overrides`
    name a field, and those filled fields alone. ConfigError where `model` or a setting contradicts the family."""
    if model.family not in ("auto", defaults.family):
        raise ConfigError(f"{where}model.family is {model.family!r} but {where}model.source {model.source} is a "
                          f"{defaults.family} model")
    named = set(sampling.model_fields_set) | set(overrides)
    if defaults.family == KLEIN and "scheduler" in named:
        raise ConfigError(f"{where}sampling.scheduler: FLUX.2 [klein] samples with its own flow-matching scheduler; "
                          "remove the setting for this model")
    if defaults.family == DTC and "strength" in named:
        raise ConfigError(f"{where}sampling.strength applies to FLUX.2 [klein] only; DTC always samples the whole "
                          "region")
    filled = {}
    for name in MODEL_DEFAULTED:
        value = getattr(defaults, name)
        if name not in named and value is not None and not (name == "scheduler" and defaults.family == KLEIN):
            filled[name] = value
    merged = _merged(sampling, {**overrides, **filled}, f"{where}sampling")
    if defaults.family == KLEIN and merged.resolution % KLEIN_MULTIPLE:
        raise ConfigError(f"{where}sampling.resolution: FLUX.2 [klein] needs a multiple of {KLEIN_MULTIPLE} (its "
                          f"VAE's 8x and 2x2 patches), got {merged.resolution}")
    return merged, filled


@functools.lru_cache(maxsize=16)
def _image_settings(resolution: int, reference_size: int, image: ImageConfig, output: OutputConfig) -> ImageSettings:
    """Built once per distinct value, not per pair (the sections are frozen, so they are keys)."""
    return ImageSettings(resolution=resolution, reference_size=reference_size, max_pixels=image.max_pixels,
                         context_margin=image.context_margin, color_match=image.color_match,
                         dilate_px=image.dilate_px, feather_px=image.feather_px, output_format=output.format,
                         output_quality=output.quality)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """The inference run's settings from file, environment and `--set` overrides (see pipeline.core.settings)."""
    return load_settings(RunConfig, path, overrides)
