"""Seams: how far the pasted crop's colours are from the scene's where they meet, for each colour-match method.

Every pair goes through `paste_back(..., color_match=method, measure=True)` (`pipeline.imaging.seams`): seam ΔE00 on
the band paste-back takes from the crop outside the region, region ΔE00 inside it, and the pixels outside the
dilated region that changed (must be 0). Three sources of generated crops, each saying something different:

- `demo`: the demo model (64 px crops, the demo's sampling) on the demo's sample set, every product with every
  scene. Its VAE and sampler are real, so this is the drift a trained model leaves, on drawn rooms.
- `tiny`: the untrained tiny model on photo-like scenes. Its crops are noise everywhere: it shows what the metrics
  read when the model keeps nothing of the scene, not how well matching works.
- `photo_drift`: photo-like scenes (`pipeline.synthetic.images.photo`, two sizes) with 512 px crops that are the
  scene's own crop with a product drawn into the region, then a synthetic VAE drift: per-channel gain, offset and
  gamma, then a slight blur and noise. The colour part is what a global colour map can remove; `floor` is the same
  crops with the blur and noise alone, the best a map can do (resampling, the product's edge spilling into the band
  and the softening remain).

`cost` times `paste_back` on the photo scenes at 512 px crops, in a process with one BLAS thread as in a Ray task:
process CPU time (core-ms) per pair of colour matching (`color_match=m` against `none`), of the metrics
(`measure=True` against False), and of both, the least of `repeats` interleaved calls. The paste-back itself (alpha,
resampling, blending) is not counted.
"""

from __future__ import annotations

import dataclasses
import io
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow.parquet as pq
from PIL import Image, ImageFilter

from pipeline.imaging.color_match import COLOR_MATCH_METHODS
from pipeline.imaging.composite import paste_back
from pipeline.imaging.crop import crop_resized
from pipeline.imaging.geometry import context_window
from pipeline.imaging.masks import Region
from pipeline.imaging.seams import SeamMetrics
from pipeline.imaging.settings import ImageSettings
from pipeline.synthetic.images import PHONE, ellipse_mask, photo


@dataclass(frozen=True)
class SeamsPlan:
    demo_steps: int = 20  # the demo's sampling: DDIM, 20 steps, guidance 2.0, 64 px
    demo_guidance: float = 2.0
    demo_resolution: int = 64
    demo_products: int = 6  # the demo's sample set: every product with every scene
    demo_scenes: int = 4
    tiny_pairs: int = 8
    tiny_resolution: int = 128
    tiny_steps: int = 4
    photo_sizes: tuple[tuple[int, int], ...] = ((1024, 768), (4000, 3000))
    photo_scenes: int = 2  # drawn scenes per size
    photo_pairs: int = 16  # pairs per size (regions and drifts drawn per pair)
    photo_resolution: int = 512
    repeats: int = 15  # timed calls per cost figure
    batch_size: int = 8
    torch_threads: int | None = None

    @classmethod
    def quick(cls) -> SeamsPlan:
        """Test-sized: seconds, figures meaningless."""
        return cls(demo_steps=2, demo_products=1, demo_scenes=2, tiny_pairs=1, tiny_resolution=64, tiny_steps=1,
                   photo_sizes=((256, 192),), photo_scenes=1, photo_pairs=2, photo_resolution=64, repeats=1)


# Demo and tiny: the model's crops


@dataclass(frozen=True)
class ModelPair:
    scene: bytes  # the scene's JPEG
    generated: np.ndarray
    window: tuple[int, int, int, int]
    region: Region


def demo_set_pairs(plan: SeamsPlan, source: str, steps: int, resolution: int) -> list[ModelPair]:
    """Every product with every scene of the demo's sample set, prepared as the pipeline does and sampled."""
    from pipeline.inference.preprocess import PREPARE_SCENES, prepare_pair
    from pipeline.synthetic.samples import write_sample_set

    settings = ImageSettings(resolution=resolution)
    with tempfile.TemporaryDirectory() as root:
        sample_set = write_sample_set(root, n_products=plan.demo_products, n_scenes=plan.demo_scenes)
        products = [_read(row["image_uri"]) for row in pq.read_table(sample_set.catalogue_uri).to_pylist()]
        scenes = pq.read_table(sample_set.scenes_uri).to_pylist()
        inputs = []
        for row in scenes:
            scene = _read(row["image_uri"])
            mask = _read(row["mask_uri"]) if row["mask_uri"] else None
            box = None if mask else (row["x0"], row["y0"], row["x1"], row["y1"])
            for product in products:
                prepared = prepare_pair(scene, product, mask_bytes=mask, box=box, settings=settings)
                inputs.append((scene, prepared))
    PREPARE_SCENES.clear()
    outputs = _sample(source, [p for _, p in inputs], plan, steps=steps, guidance=plan.demo_guidance)
    return [ModelPair(scene, out, p.window, Region.unpack(p.region)) for (scene, p), out in zip(inputs, outputs,
                                                                                                strict=True)]


def photo_model_pairs(plan: SeamsPlan, source: str) -> list[ModelPair]:
    """Photo-like scenes with a product, prepared as the pipeline does and sampled by `source`."""
    from pipeline.inference.preprocess import PREPARE_SCENES, prepare_pair
    from pipeline.synthetic.images import encode

    settings = ImageSettings(resolution=plan.tiny_resolution)
    inputs = []
    for i in range(plan.tiny_pairs):
        scene_img = photo(640, 480, seed=i, scales=PHONE, grain=4.0)
        scene = encode(scene_img, "JPEG", quality=92)
        product = encode(photo(300, 300, seed=1000 + i), "JPEG", quality=92)
        box = _random_box(np.random.default_rng(i), scene_img.size)
        inputs.append((scene, prepare_pair(scene, product, mask_bytes=None, box=box, settings=settings)))
    PREPARE_SCENES.clear()
    outputs = _sample(source, [p for _, p in inputs], plan, steps=plan.tiny_steps, guidance=plan.demo_guidance)
    return [ModelPair(scene, out, p.window, Region.unpack(p.region)) for (scene, p), out in zip(inputs, outputs,
                                                                                                strict=True)]


def _sample(source: str, prepared: list, plan: SeamsPlan, *, steps: int, guidance: float) -> list[np.ndarray]:
    import torch

    from pipeline.model import load_dtc
    from pipeline.model.sampler import DTCSampler, SampleBatch, SamplingParams

    if plan.torch_threads:
        torch.set_num_threads(plan.torch_threads)
    sampler = DTCSampler(load_dtc(source, device=torch.device("cpu")),
                         SamplingParams(scheduler="ddim", steps=steps, guidance=guidance))
    outputs: list[np.ndarray] = []
    for start in range(0, len(prepared), plan.batch_size):
        part = prepared[start : start + plan.batch_size]
        outputs.extend(sampler.generate(SampleBatch(
            scene=np.stack([p.scene_crop for p in part]), mask=np.stack([p.mask_crop for p in part]),
            hint=np.stack([p.hint for p in part]), reference=np.stack([p.reference for p in part]),
            seeds=np.arange(start, start + len(part), dtype=np.int64),
        )))
    return outputs


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def model_metrics(pairs: list[ModelPair], method: str, settings: ImageSettings) -> list[SeamMetrics]:
    metrics = []
    for pair in pairs:
        scene = Image.open(io.BytesIO(pair.scene)).convert("RGB")  # drawn JPEGs: upright, no EXIF
        metrics.append(paste_back(scene, pair.generated, pair.window, pair.region, dilate_px=settings.dilate_px,
                                  feather_px=settings.feather_px, color_match=method, measure=True))
    return metrics


# Photo-like scenes with a synthetic drift


@dataclass(frozen=True)
class DriftPair:
    scene: Image.Image
    window: tuple[int, int, int, int]
    region: Region
    floor: np.ndarray  # the scene's crop with a product in the region, softened: a colour match's best
    drifted: np.ndarray  # the same with a colour drift before the softening
    drift: dict


def _random_box(rng: np.random.Generator, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """A box 15-35% of the scene's width and height, anywhere inside it."""
    width, height = size
    w, h = int(width * rng.uniform(0.15, 0.35)), int(height * rng.uniform(0.15, 0.35))
    x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
    return (x0, y0, x0 + w, y0 + h)


def _random_region(rng: np.random.Generator, size: tuple[int, int]) -> Region:
    """`_random_box`, as a box region or as the ellipse inscribed in it (a mask region), one or the other at random."""
    x0, y0, x1, y1 = _random_box(rng, size)
    if rng.random() < 0.5:
        return Region.from_box((x0, y0, x1, y1), size)
    return Region.from_mask(ellipse_mask((x0, y0, x1 - 1, y1 - 1), size))


def colour_drift(crop: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """`crop` with a global colour drift: per-channel gain (0.9-1.1), offset (-8..8 levels) and gamma (0.9-1.1)."""
    gain, offset = rng.uniform(0.9, 1.1, 3), rng.uniform(-8, 8, 3)
    gamma = rng.uniform(0.9, 1.1, 3)
    out = 255.0 * (crop / 255.0) ** gamma * gain + offset
    drift = {"gain": gain.round(3).tolist(), "offset": offset.round(1).tolist(), "gamma": gamma.round(3).tolist()}
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), drift


def softened(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`crop` as blurred (Gaussian, 0.6 px) and noisy (1.5 levels) as a VAE leaves it: what no colour map undoes."""
    out = np.asarray(Image.fromarray(crop).filter(ImageFilter.GaussianBlur(0.6)), dtype=np.float64)
    return np.clip(np.rint(out + rng.normal(0, 1.5, out.shape)), 0, 255).astype(np.uint8)


def drift_pairs(plan: SeamsPlan, size: tuple[int, int], settings: ImageSettings) -> list[DriftPair]:
    scenes = [photo(*size, seed=s, scales=PHONE, grain=4.0) for s in range(plan.photo_scenes)]
    res = plan.photo_resolution
    pairs = []
    for i in range(plan.photo_pairs):
        rng = np.random.default_rng(10_000 + i)
        scene = scenes[i % len(scenes)]
        region = _random_region(rng, size)
        window = context_window(region.bbox, size, margin=settings.context_margin, min_side=res,
                                min_margin=settings.dilate_px)
        clean = np.array(crop_resized(scene, window, (res, res)))
        product = np.asarray(photo(res, res, seed=20_000 + i, scales=((8, 1.0),), grain=2.0))
        inside = region.resized_crop(window, res)
        clean[inside] = product[inside]
        coloured, drift = colour_drift(clean, rng)
        drifted = softened(coloured, np.random.default_rng(30_000 + i))
        floor = softened(clean, np.random.default_rng(30_000 + i))
        pairs.append(DriftPair(scene, window, region, floor, drifted, drift))
    return pairs


def drift_metrics(pairs: list[DriftPair], method: str, settings: ImageSettings, *, floor: bool) -> list[SeamMetrics]:
    metrics = []
    for pair in pairs:
        scene = pair.scene.copy()
        generated = pair.floor if floor else pair.drifted
        metrics.append(paste_back(scene, generated, pair.window, pair.region, dilate_px=settings.dilate_px,
                                  feather_px=settings.feather_px, color_match=method, measure=True))
    return metrics


_ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
COST_PAIRS = 4  # photo_drift pairs timed per scene size


def cost_core_ms(plan: SeamsPlan, size: tuple[int, int], settings: ImageSettings) -> dict:
    """`_cost_core_ms` on the first `COST_PAIRS` photo_drift pairs of `size`, in a fresh process whose BLAS and
    OpenMP run one thread, as in a Ray task (Ray sets OMP_NUM_THREADS=1): this process's BLAS may already run several,
    and on problems this small their spinning threads cost more than the work."""
    saved = {name: os.environ.get(name) for name in _ONE_THREAD}
    os.environ.update(_ONE_THREAD)  # read by the child's BLAS when it loads
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            return pool.submit(_cost_core_ms, plan, size, settings).result()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _cost_core_ms(plan: SeamsPlan, size: tuple[int, int], settings: ImageSettings) -> dict:
    """Core-ms per pair that matching, metrics and both add to `paste_back`: for each variant the least process CPU
    time of `plan.repeats` calls (contention from other processes only adds), averaged over the pairs; and the
    paste-back's own (`none`, unmeasured)."""
    pairs = drift_pairs(dataclasses.replace(plan, photo_pairs=min(COST_PAIRS, plan.photo_pairs)), size, settings)
    variants = [("none", False)] + [(m, measure) for m in COLOR_MATCH_METHODS for measure in (False, True)
                                    if (m, measure) != ("none", False)]
    per_pair: dict[tuple[str, bool], list[float]] = {v: [] for v in variants}
    for pair in pairs:
        scene = pair.scene.copy()
        samples: dict[tuple[str, bool], list[float]] = {v: [] for v in variants}
        for _ in range(plan.repeats + 1):  # the first round warms up
            for method, measure in variants:
                start = time.process_time()
                paste_back(scene, pair.drifted, pair.window, pair.region, dilate_px=settings.dilate_px,
                           feather_px=settings.feather_px, color_match=method, measure=measure)
                samples[(method, measure)].append(time.process_time() - start)
        for v in variants:
            per_pair[v].append(min(samples[v][1:]) * 1e3)
    base = float(np.mean(per_pair[("none", False)]))
    out: dict = {"paste_back_core_ms": round(base, 2), "pairs": len(pairs)}
    for method in COLOR_MATCH_METHODS:
        matched = base if method == "none" else float(np.mean(per_pair[(method, False)]))
        both = float(np.mean(per_pair[(method, True)]))
        out[method] = {"matching_core_ms": round(matched - base, 2),
                       "matching_and_metrics_core_ms": round(both - base, 2)}
    out["metrics_core_ms"] = out["none"]["matching_and_metrics_core_ms"]
    return out


# The report


def summarise(metrics: list[SeamMetrics]) -> dict:
    seam = np.array([m.seam_delta_e for m in metrics], dtype=np.float64)
    region = np.array([m.region_delta_e for m in metrics], dtype=np.float64)
    seam_ok = seam[np.isfinite(seam)]
    return {
        "seam_delta_e_mean": round(float(seam_ok.mean()), 3) if seam_ok.size else None,
        "seam_delta_e_p90": round(float(np.percentile(seam_ok, 90)), 3) if seam_ok.size else None,
        "region_delta_e_mean": round(float(np.nanmean(region)), 3) if np.isfinite(region).any() else None,
        "outside_changed_px_max": max(m.outside_changed_px for m in metrics),
        "pairs": len(metrics),
        "pairs_without_band": int(np.count_nonzero(~np.isfinite(seam))),
    }


def _methods_table(summaries: dict[str, dict]) -> dict:
    none = summaries["none"]["seam_delta_e_mean"]
    for stats in summaries.values():
        mean = stats["seam_delta_e_mean"]
        stats["seam_mean_vs_none"] = round(mean / none, 3) if mean is not None and none else None
    return summaries


def bench_seams(plan: SeamsPlan) -> dict:
    started = time.perf_counter()
    report: dict = {"plan": asdict(plan), "methods": list(COLOR_MATCH_METHODS), "cases": {}}
    settings = ImageSettings()

    demo = demo_set_pairs(plan, "demo", plan.demo_steps, plan.demo_resolution)
    report["cases"]["demo"] = {
        "what": f"demo model, {plan.demo_resolution} px crops, DDIM {plan.demo_steps} steps, guidance "
        f"{plan.demo_guidance}, the demo's sample set ({plan.demo_products} products x {plan.demo_scenes} scenes, "
        "640x480)",
        "methods": _methods_table({m: summarise(model_metrics(demo, m, settings)) for m in COLOR_MATCH_METHODS}),
    }
    tiny = photo_model_pairs(plan, "tiny")
    report["cases"]["tiny"] = {
        "what": f"untrained tiny model (noise), {plan.tiny_resolution} px crops, {plan.tiny_steps} steps, photo-like "
        "640x480 scenes",
        "methods": _methods_table({m: summarise(model_metrics(tiny, m, settings)) for m in COLOR_MATCH_METHODS}),
    }
    costs = {}
    for size in plan.photo_sizes:
        pairs = drift_pairs(plan, size, settings)
        name = f"photo_drift_{size[0]}x{size[1]}"
        methods = {m: summarise(drift_metrics(pairs, m, settings, floor=False)) for m in COLOR_MATCH_METHODS}
        methods["floor"] = summarise(drift_metrics(pairs, "none", settings, floor=True))
        report["cases"][name] = {
            "what": f"synthetic VAE drift, {plan.photo_resolution} px crops, photo-like {size[0]}x{size[1]} scenes; "
            "floor: the same crops blurred and noisy without the colour drift",
            "methods": _methods_table(methods),
            "drift_example": pairs[0].drift,
        }
        costs[f"{size[0]}x{size[1]}"] = cost_core_ms(plan, size, settings)
    report["cost"] = {
        "what": f"core-ms per pair added to paste_back at {plan.photo_resolution} px crops (process CPU time, one "
        f"BLAS thread), mean over the first {COST_PAIRS} photo_drift pairs of the least of `repeats` calls",
        "by_scene": costs,
    }
    report["bench_seconds"] = round(time.perf_counter() - started, 1)
    return report


def table_lines(report: dict) -> list[str]:
    """The part's lines of the printed table."""
    lines = ["seams: ΔE00 seam mean / p90, region mean, outside changed px (max); seam mean vs none"]
    for name, case in report["cases"].items():
        lines.append(f"  {name}: {case['what']}")
        for method, s in case["methods"].items():
            lines.append(f"    {method:<9} seam {_num(s['seam_delta_e_mean'])} / {_num(s['seam_delta_e_p90'])}  "
                         f"region {_num(s['region_delta_e_mean'])}  outside {s['outside_changed_px_max']}  "
                         f"x{_num(s['seam_mean_vs_none'])}  ({s['pairs']} pairs)")
    for scene, figures in report["cost"]["by_scene"].items():
        parts = ", ".join(f"{m} {figures[m]['matching_and_metrics_core_ms']}" for m in COLOR_MATCH_METHODS)
        lines.append(f"  cost at {scene} (core-ms/pair, matching + metrics): {parts}; paste_back itself "
                     f"{figures['paste_back_core_ms']}")
    return lines


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
