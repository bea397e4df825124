"""The three Ray Data stages: CPU preprocessing, GPU inference, CPU postprocessing.

Each stage turns every failure of one pair into that pair's `failed` status with a stable reason, and passes
the row on: a bad pair never fails its batch or the job, and every pair reaches the metadata writer.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from types import SimpleNamespace
from typing import Any

import numpy as np

from pipeline.core.errors import INTERNAL_ERROR, INVALID_BOX, MODEL_ERROR, WRITE_ERROR, PairError
from pipeline.core.last_entry import LastEntry
from pipeline.core.model_families import KLEIN
from pipeline.core.model_sources import NOOP_MODEL
from pipeline.core.storage import S3Config, join, read_bytes, storage_options, write_bytes
from pipeline.inference.config import RunConfig
from pipeline.inference.keys import image_key
from pipeline.inference.metadata_row import metadata_row
from pipeline.inference.postprocess import composite_pair
from pipeline.inference.preprocess import prepare_pair
from pipeline.inference.prompts import render
from pipeline.inference.quality import attempt_seed, crop_metrics, needs_retry, quality_flags, rank

log = logging.getLogger(__name__)

ARRAY_COLUMNS = ("scene_crop", "mask_crop", "hint", "reference")

# Per process, the scene and mask files the CPU stages read last: a scene's pairs arrive together, so each stage
# reads a scene once per run of its pairs, and no scene bytes travel between the stages.
PREPARE_SCENE_FILE: LastEntry[bytes] = LastEntry()
PREPARE_MASK_FILE: LastEntry[bytes] = LastEntry()
COMPOSITE_SCENE_FILE: LastEntry[bytes] = LastEntry()


def _read_last(cache: LastEntry[bytes], uri: str, s3: S3Config) -> bytes:
    return cache.get_or_make(uri, lambda: read_bytes(uri, s3))


def parse_box(raw: str | None) -> tuple[int, int, int, int] | None:
    """The manifest's box text ("x0,y0,x1,y1") as four integers; anything else is this pair's `invalid_box`."""
    if raw is None:
        return None
    try:
        values = [float(v) for v in raw.split(",")]
    except ValueError:
        raise PairError(INVALID_BOX, f"box ({raw}) is not four numbers x0, y0, x1, y1") from None
    if len(values) != 4 or not all(math.isfinite(v) and v == int(v) for v in values):
        raise PairError(INVALID_BOX, f"box ({raw}) must be four finite integer pixel coordinates")
    return tuple(int(v) for v in values)  # type: ignore[return-value]


def _fail(row: dict[str, Any], exc: BaseException, stage: str) -> None:
    if isinstance(exc, PairError):
        row["status"], row["error_reason"], row["error_message"] = "failed", exc.reason, exc.message
    else:
        row["status"], row["error_reason"] = "failed", INTERNAL_ERROR
        row["error_message"] = f"{stage}: {type(exc).__name__}: {exc}"
    if row["error_reason"] == INTERNAL_ERROR:
        # A bug, not bad input: the row says where, the job log gets the whole traceback (with the cause that
        # `prepare_pair` / `composite_pair` wrapped) for whoever fixes it.
        log.error("unexpected error in %s for %s/%s:\n%s", stage, row["product_id"], row["scene_id"],
                  "".join(traceback.format_exception(exc)))


def prepare_row(row: dict[str, Any], cfg: RunConfig) -> dict[str, Any]:
    """Fetch and decode the scene, its mask and the product; build the crop, mask, collage and reference."""
    started = time.perf_counter()
    settings = cfg.image_settings
    res, ref = settings.resolution, settings.reference_size
    row.update(status="ok", error_reason="", error_message="", region=b"",
               window=np.zeros(4, np.int64), scene_width=0, scene_height=0)
    arrays = {
        "scene_crop": np.zeros((res, res, 3), np.uint8),
        "mask_crop": np.zeros((res, res), np.bool_),
        "hint": np.zeros((res, res, 3), np.uint8),
        "reference": np.zeros((ref, ref, 3), np.uint8),
    }
    try:
        box = parse_box(row["box"])
        scene_bytes = _read_last(PREPARE_SCENE_FILE, row["scene_uri"], cfg.s3)
        product_bytes = read_bytes(row["product_uri"], cfg.s3)
        mask_bytes = _read_last(PREPARE_MASK_FILE, row["mask_uri"], cfg.s3) if row["mask_uri"] else None
        prepared = prepare_pair(scene_bytes, product_bytes, mask_bytes=mask_bytes, box=box, settings=settings)
        arrays.update(scene_crop=prepared.scene_crop, mask_crop=prepared.mask_crop, hint=prepared.hint,
                      reference=prepared.reference)
        # The region travels packed (its bbox, one bit a pixel): postprocess never decodes the mask image again.
        row.update(region=prepared.region, window=np.asarray(prepared.window),
                   scene_width=prepared.scene_size[0], scene_height=prepared.scene_size[1])
    except Exception as exc:  # noqa: BLE001 - every failure becomes this pair's row, never the batch's
        _fail(row, exc, "preprocess")
    row.update(arrays)
    row["preprocess_s"] = time.perf_counter() - started
    return row


class NoopSampler:
    """The `noop` model: returns the scene crop unchanged. Measures the framework's own cost, nothing else."""

    model_id = NOOP_MODEL

    def generate(self, batch: Any) -> np.ndarray:
        return batch.scene.copy()


class Inference:
    """One per GPU: loads the model once, then generates batches. Runs unchanged on CPU without CUDA.

    `prompts`: every prompt the run's pairs give, when the driver knows them (a text-conditioned model encodes them
    as it starts, then frees the GPU of its text encoder); None: each is encoded when first seen."""

    def __init__(self, cfg: RunConfig, prompts: list[str] | None = None) -> None:
        import ray

        self.cfg = cfg
        self.prompted = cfg.model.family == KLEIN
        # Recorded per pair (metadata `inference_node`), so placement on GPU nodes can be checked after the run.
        self.node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
        if cfg.model.source == NOOP_MODEL:
            # Measures the framework alone: no torch to import, no model to build.
            self.sampler: Any = NoopSampler()
            self.model_id = NOOP_MODEL
            self.batch_type: Any = SimpleNamespace
            return
        from pipeline.model.device import torch_dtype

        sampling, source = cfg.sampling, cfg.model.source
        options = storage_options(source, cfg.s3)
        if self.prompted:
            from pipeline.model.klein import KleinBatch, KleinParams, build_klein_sampler

            params = KleinParams(steps=sampling.steps, guidance=sampling.guidance, strength=sampling.strength)
            self.sampler = build_klein_sampler(source, params, dtype=torch_dtype(cfg.model.dtype),
                                               cache_dir=cfg.model.cache_dir, storage_options=options, prompts=prompts)
            self.model_id = source
            self.batch_type = KleinBatch
            return
        from pipeline.model import DTCSampler, SampleBatch, SamplingParams, load_dtc, select_device

        device = select_device()
        dtc = load_dtc(source, device=device, dtype=torch_dtype(cfg.model.dtype), cache_dir=cfg.model.cache_dir,
                       storage_options=options)
        self.model_id = dtc.model_id
        params = SamplingParams(scheduler=sampling.scheduler, steps=sampling.steps, guidance=sampling.guidance)
        self.sampler = DTCSampler(dtc, params, compile=cfg.model.compile, channels_last=cfg.model.channels_last)
        self.batch_type = SampleBatch
        log.info("model %s loaded on %s", self.model_id, device)

    def prompts(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Each pair's prompt (None for a model without text), rendered once per batch: the model's input and the
        row's `prompt` column."""
        if not self.prompted:
            return np.full(len(batch["seed"]), None, dtype=object)
        template = self.cfg.sampling.prompt
        return np.array([render(template, _text(category), _text(title))
                         for category, title in zip(batch["category"], batch["title"], strict=True)], dtype=object)

    def _generate(self, batch: dict[str, np.ndarray], idx: np.ndarray, seeds: np.ndarray | None = None) -> np.ndarray:
        """The images of the pairs `idx`, each with its seed (or `seeds[idx]`, a retry's)."""
        seeds = batch["seed"] if seeds is None else seeds
        inputs = {"scene": batch["scene_crop"][idx], "mask": batch["mask_crop"][idx],
                  "reference": batch["reference"][idx], "seeds": seeds[idx].astype(np.int64)}
        if self.prompted:
            inputs["prompts"] = list(batch["prompt"][idx])
        else:
            inputs["hint"] = batch["hint"][idx]
        return self.sampler.generate(self.batch_type(**inputs))

    def _generate_isolated(self, batch: dict[str, np.ndarray], idx: np.ndarray, generated: np.ndarray) -> None:
        """`generated[idx]` from one model call; if it fails, pair by pair, a pair that fails alone is `failed`."""
        if not len(idx):
            return
        try:
            generated[idx] = self._generate(batch, idx)
        except Exception:  # noqa: BLE001 - isolate the pair that breaks the batch
            log.exception("batch of %d failed; retrying its pairs one by one", len(idx))
            for i in idx:
                try:
                    generated[i] = self._generate(batch, np.array([i]))[0]
                except Exception as exc:  # noqa: BLE001
                    batch["status"][i], batch["error_reason"][i] = "failed", MODEL_ERROR
                    batch["error_message"][i] = f"generation failed: {type(exc).__name__}: {exc}"

    def _retry_flagged(self, batch: dict[str, np.ndarray], generated: np.ndarray, attempts: np.ndarray) -> None:
        """Sample the pairs a quality check flags again (seeds derived from theirs), up to `quality.retries` times,
        keeping each pair's best attempt (`quality.rank` of its paste-back into the scene crop)."""
        quality, settings = self.cfg.quality, self.cfg.image_settings

        def measured(i: int, image: np.ndarray) -> Any:
            side = int(batch["window"][i][2] - batch["window"][i][0])
            return crop_metrics(batch["scene_crop"][i], batch["mask_crop"][i], image, side, settings)

        best = {int(i): measured(i, generated[i]) for i in np.flatnonzero(batch["status"] == "ok")}
        for attempt in range(2, quality.retries + 2):
            flagged = np.array([i for i, m in best.items() if needs_retry(m, quality)], dtype=np.int64)
            if not len(flagged):
                return
            seeds = batch["seed"].astype(np.int64)  # a copy: the rows keep each pair's own seed
            seeds[flagged] = [attempt_seed(int(seeds[i]), attempt) for i in flagged]
            try:
                again = self._generate(batch, flagged, seeds)
            except Exception:  # noqa: BLE001 - a retry that fails keeps the attempts made so far
                log.exception("retry %d of %d flagged pairs failed; keeping their earlier attempts", attempt,
                              len(flagged))
                return
            for i, image in zip(flagged, again, strict=True):
                attempts[i] = attempt
                candidate = measured(int(i), image)
                if rank(candidate, quality) < rank(best[int(i)], quality):
                    best[int(i)], generated[i] = candidate, image

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        n = len(batch["seed"])
        # Text columns may arrive as fixed-width numpy strings: make them objects before writing into them.
        for name in ("status", "error_reason", "error_message"):
            batch[name] = batch[name].astype(object)
        batch["prompt"] = self.prompts(batch)
        generated = np.zeros_like(batch["scene_crop"])
        ok = np.flatnonzero(batch["status"] == "ok")
        self._generate_isolated(batch, ok, generated)
        attempts = np.where(batch["status"] == "ok", 1, 0).astype(np.int32)
        if self.cfg.quality.retries and not isinstance(self.sampler, NoopSampler):
            self._retry_flagged(batch, generated, attempts)
        elapsed = time.perf_counter() - started
        out = {k: v for k, v in batch.items() if k not in ARRAY_COLUMNS}
        out["generated"] = generated
        # GPU time is shared evenly by the batch's pairs that were computed.
        out["inference_s"] = np.where(batch["status"] == "ok", elapsed / max(len(ok), 1), 0.0).astype(np.float32)
        out["attempts"] = attempts
        out["model_id"] = np.array([self.model_id] * n, dtype=object)
        ran = np.zeros(n, np.bool_)
        ran[ok] = True
        out["inference_node"] = np.array([self.node_id if r else None for r in ran], dtype=object)
        return out


def _text(value: object) -> str | None:
    """A catalogue field as numpy hands it over: text, or None for a null (None or NaN)."""
    return value if isinstance(value, str) and value else None


def composite_row(row: dict[str, Any], cfg: RunConfig) -> dict[str, Any]:
    """Read the scene, paste the generated crop back into it, encode, write; return the pair's metadata row."""
    started = time.perf_counter()
    settings = cfg.image_settings
    output_uri, output_bytes = "", 0
    measured: dict[str, Any] = {"attempts": int(row.get("attempts") or 0)}
    if row["status"] == "ok":
        try:
            # Inside the try: an id that cannot be a key (empty) fails this pair, never the task and the job.
            key = image_key(row["variant"], row["product_id"], row["scene_id"], settings.output_extension)
            scene_bytes = _read_last(COMPOSITE_SCENE_FILE, row["scene_uri"], cfg.s3)
            encoded, _, metrics = composite_pair(
                scene_bytes, row["generated"], tuple(int(v) for v in row["window"]),
                region=row["region"], settings=settings,
            )
            measured = {name: None if isinstance(value, float) and math.isnan(value) else value
                        for name, value in metrics.__dict__.items()}  # no seam band: null, not NaN
            measured.update(quality_flags=quality_flags(metrics, cfg.quality), attempts=int(row.get("attempts") or 1))
            try:
                write_bytes(join(cfg.run_uri, key), encoded, cfg.s3)
            except Exception as exc:  # noqa: BLE001 - any storage failure is this pair's write_error
                raise PairError(WRITE_ERROR, f"could not write {join(cfg.run_uri, key)}: {exc}") from None
            output_uri, output_bytes = join(cfg.run_uri, key), len(encoded)
        except Exception as exc:  # noqa: BLE001
            _fail(row, exc, "postprocess")
    # An all-null column can reach this row as NaN: only a node id string is recorded.
    node = row.get("inference_node")
    return metadata_row(
        cfg, row, status=row["status"], error_reason=row["error_reason"], error_message=row["error_message"],
        output_uri=output_uri, model_id=row.get("model_id"), scene_size=(row["scene_width"], row["scene_height"]),
        output_bytes=output_bytes, preprocess_s=row["preprocess_s"], inference_s=row.get("inference_s", 0.0),
        postprocess_s=time.perf_counter() - started, inference_node=node if isinstance(node, str) else None,
        prompt=_text(row.get("prompt")), quality=measured,
    )
