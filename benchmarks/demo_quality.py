"""How well a model fills the region: PSNR against the procedural ground truth on held-out pairs.

Each pair goes the inference pipeline's way: the room and the product as JPEGs (as the demo's sample set writes them)
through `prepare_pair` (context window, mask crop, collage, reference), then the sampler; the region's pixels of the
generated crop are compared with the ground truth (`pipeline.synthetic.procedural`) cropped and resampled the same way.

Rows: each model as it is, and with its hint branch zeroed (FiLM at zero: the DTC computes its base network, the
paper's ablation), and three baselines that need no model: the collage pasted onto the room (the product photo, white
background and all, in the collage rectangle; the room's own pixels elsewhere, which no model sees), the collage
canvas the model is given (black around the product), and the region filled with the mean colour around it.
"""

from __future__ import annotations

import copy
import io
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from pipeline.imaging.collage import hint_rectangle
from pipeline.imaging.crop import crop_resized
from pipeline.imaging.settings import ImageSettings
from pipeline.inference.preprocess import PREPARE_SCENES, PreparedPair, prepare_pair
from pipeline.model import DTC, load_dtc
from pipeline.model.sampler import DTCSampler, SampleBatch, SamplingParams
from pipeline.synthetic.images import encode
from pipeline.synthetic.procedural import held_out_seeds, make_pair


@dataclass(frozen=True)
class QualityPlan:
    sources: tuple[str, ...] = ("demo", "tiny")
    pairs: int = 64
    resolution: int = 64  # the demo model's crop (its default resolution) and the demo's
    steps: int = 20  # the demo's
    guidance: float = 2.0  # the demo's
    batch_size: int = 16
    torch_threads: int | None = None


@dataclass(frozen=True)
class HeldOutCrop:
    """One held-out pair as the model sees it, and the ground truth at the crop's pixels."""

    seed: int
    prepared: PreparedPair
    target: np.ndarray  # uint8 (R, R, 3)
    rect: tuple[int, int, int, int]  # the collage rectangle in the crop


def held_out_crops(n: int, resolution: int) -> list[HeldOutCrop]:
    """The first `n` held-out pairs, prepared as the inference pipeline prepares a pair."""
    settings = ImageSettings(resolution=resolution)
    crops = []
    for seed in held_out_seeds(n):
        pair = make_pair(seed)
        mask = None if pair.mask is None else encode(pair.mask, "PNG")
        product = encode(pair.product, "JPEG", quality=92)
        prepared = prepare_pair(
            encode(pair.room, "JPEG", quality=92), product, mask_bytes=mask, box=None if mask else pair.box,
            settings=settings,
        )
        target = np.asarray(crop_resized(pair.target, prepared.window, (resolution, resolution)))
        rect = hint_rectangle(prepared.mask_crop, Image.open(io.BytesIO(product)).size)
        crops.append(HeldOutCrop(seed, prepared, target, rect))
    PREPARE_SCENES.clear()
    return crops


def region_psnr(output: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """PSNR in dB (peak 255) over the pixels where `mask` is True."""
    diff = output[mask].astype(np.float64) - target[mask].astype(np.float64)
    mse = float(np.mean(diff**2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def collage_on_scene(crop: HeldOutCrop) -> np.ndarray:
    x0, y0, x1, y1 = crop.rect
    out = crop.prepared.scene_crop.copy()
    out[y0:y1, x0:x1] = crop.prepared.hint[y0:y1, x0:x1]
    return out


def context_mean_fill(crop: HeldOutCrop) -> np.ndarray:
    """The region filled with the mean colour of the crop around it: what a model that learnt only the room's
    colour would score."""
    out = crop.prepared.scene_crop.copy()
    region = crop.prepared.mask_crop.astype(bool)
    out[region] = out[~region].mean(axis=0).round().astype(np.uint8)
    return out


def zero_hint_branch(dtc: DTC) -> DTC:
    """A copy of `dtc` whose FiLM layers are zero, so the hint branch has no effect."""
    zeroed = copy.deepcopy(dtc)
    with torch.no_grad():
        for film in [*zeroed.hint.films, zeroed.hint.film_mid]:
            film.proj.weight.zero_()
            film.proj.bias.zero_()
    return zeroed


def generate(dtc: DTC, crops: list[HeldOutCrop], params: SamplingParams, batch_size: int) -> list[np.ndarray]:
    sampler = DTCSampler(dtc, params)
    outputs: list[np.ndarray] = []
    for start in range(0, len(crops), batch_size):
        part = crops[start : start + batch_size]
        batch = SampleBatch(
            scene=np.stack([c.prepared.scene_crop for c in part]),
            mask=np.stack([c.prepared.mask_crop for c in part]),
            hint=np.stack([c.prepared.hint for c in part]),
            reference=np.stack([c.prepared.reference for c in part]),
            seeds=np.array([c.seed for c in part], dtype=np.int64),
        )
        outputs.extend(sampler.generate(batch))
    return outputs


def _summary(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values)
    return {"mean": round(float(arr.mean()), 2), "min": round(float(arr.min()), 2), "max": round(float(arr.max()), 2)}


def paired_difference(a: list[float], b: list[float], *, resamples: int = 10_000, seed: int = 0) -> dict[str, float]:
    """Mean of a - b per pair, with a 95% bootstrap interval (percentile)."""
    diffs = np.asarray(a) - np.asarray(b)
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), (resamples, len(diffs)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": round(float(diffs.mean()), 2), "ci95": [round(float(low), 2), round(float(high), 2)]}


def bench_demo_quality(plan: QualityPlan, crops: list[HeldOutCrop] | None = None) -> dict:
    """Region PSNR per model (as is and hint-zeroed) and per baseline on `plan.pairs` held-out pairs."""
    if plan.torch_threads:
        torch.set_num_threads(plan.torch_threads)
    started = time.perf_counter()
    crops = crops if crops is not None else held_out_crops(plan.pairs, plan.resolution)
    masks = [c.prepared.mask_crop for c in crops]
    per_pair: dict[str, list[float]] = {
        "collage_on_scene": [region_psnr(collage_on_scene(c), c.target, m) for c, m in zip(crops, masks, strict=True)],
        "collage_canvas": [region_psnr(c.prepared.hint, c.target, m) for c, m in zip(crops, masks, strict=True)],
        "context_mean_fill": [region_psnr(context_mean_fill(c), c.target, m)
                              for c, m in zip(crops, masks, strict=True)],
    }
    params = SamplingParams(scheduler="ddim", steps=plan.steps, guidance=plan.guidance)
    seconds: dict[str, float] = {}
    for source in plan.sources:
        dtc = load_dtc(source, device=torch.device("cpu"))
        for name, model in ((source, dtc), (f"{source}_hint_zeroed", zero_hint_branch(dtc))):
            t0 = time.perf_counter()
            outputs = generate(model, crops, params, plan.batch_size)
            seconds[name] = round(time.perf_counter() - t0, 1)
            per_pair[name] = [region_psnr(o, c.target, m) for o, c, m in zip(outputs, crops, masks, strict=True)]
    report = {
        "plan": asdict(plan),
        "pairs": len(crops),
        "held_out_seeds": [crops[0].seed, crops[-1].seed] if crops else [],
        "region_psnr_db": {name: _summary(values) for name, values in per_pair.items()},
        "sampling_seconds": seconds,
        "bench_seconds": round(time.perf_counter() - started, 1),
    }
    if len(plan.sources) >= 2:
        first, second = plan.sources[:2]
        report[f"{first}_minus_{second}_db"] = paired_difference(per_pair[first], per_pair[second])
        report[f"{first}_minus_{first}_hint_zeroed_db"] = paired_difference(
            per_pair[first], per_pair[f"{first}_hint_zeroed"]
        )
    return report
