"""Core-milliseconds per pair of the CPU stages, on the real `prepare_pair` and `composite_pair`.

The inputs are what a fetch returns (bytes): a 12-megapixel photo-like JPEG scene, a 1-megapixel JPEG product, and
the region as a PNG mask (the `mask` case, the headline) or as a box (the `box` case). The generated crop is the scene
crop itself (what the no-op model returns). Time is this process's CPU time (all its threads), so it is the CPU a
machine must supply per pair, whatever else runs; the median of `repeats` runs is reported.

The breakdown is what the two stages measure of their own steps (`pipeline.inference.step_times`: decode, mask,
collage, paste-back, encode), so it describes the code that runs in production; `other` is what no step covers.

`floors` times the bare codec calls (Pillow, as the stages use it) on the same inputs: what any pixel-domain
composite must spend however the rest is written. The scene is entropy-decoded twice (drafted for the model crop,
in full for paste-back: the stages run in different processes, possibly on different nodes), the mask image once, and
the whole output is encoded once. `draft8` is close to the cost of entropy decoding alone (the part no JPEG scaling
avoids).
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable
from typing import Any

from PIL import Image

import pipeline.inference.postprocess as post
import pipeline.inference.preprocess as pre
from benchmarks.images import PairInputs, pair_inputs
from benchmarks.measure import cpu_ms
from pipeline.imaging.settings import ImageSettings
from pipeline.inference.step_times import STEPS, StepTimes

CATEGORIES = (*STEPS, "other")


def forget_scenes() -> None:
    """Empty the stages' per-process scene caches, so that the next pair pays for its scene in full."""
    pre.PREPARE_SCENES.clear()
    post.COMPOSITE_SCENES.clear()


def run_pair(inputs: PairInputs, settings: ImageSettings, *, use_mask: bool, shared: bool = False) -> dict[str, float]:
    """CPU seconds of one pair through both stages: totals per stage and per category.

    Unless `shared`, the stages' scene caches are emptied first: the pair decodes its scene as if it were the first
    pair of that scene in its task.
    """
    if not shared:
        forget_scenes()
    times = StepTimes()
    mask, box = (inputs.mask, None) if use_mask else (None, inputs.box)
    start = time.process_time()
    prepared = pre.prepare_pair(inputs.scene, inputs.product, mask_bytes=mask, box=box, settings=settings,
                                times=times)
    middle = time.process_time()
    post.composite_pair(
        inputs.scene, prepared.scene_crop, prepared.window, settings=settings, times=times,
        **_region_kwargs(prepared, mask, box),
    )
    end = time.process_time()
    totals: dict[str, float] = dict(times.seconds)
    totals["preprocess"], totals["postprocess"] = middle - start, end - middle
    totals["total"] = end - start
    totals["other"] = totals["total"] - sum(totals[c] for c in CATEGORIES if c != "other")
    return totals


def run_scene_shared(inputs: PairInputs, settings: ImageSettings, *, use_mask: bool, pairs: int) -> dict[str, float]:
    """CPU seconds per pair of `pairs` consecutive pairs of one scene, as one task of a run ordered by scene does them:
    the first pays for the scene, the others reuse what the stages cached."""
    forget_scenes()
    runs = [run_pair(inputs, settings, use_mask=use_mask, shared=True) for _ in range(pairs)]
    return {key: sum(r[key] for r in runs) / pairs for key in runs[0]}


def _region_kwargs(prepared: Any, mask: bytes | None, box: tuple | None) -> dict[str, Any]:
    """The region as `stages.composite_row` passes it: the one `prepare_pair` packed, else the mask or box itself."""
    region = getattr(prepared, "region", None)
    return {"region": region} if region else {"mask_bytes": mask, "box": box}


def _cpu_ms(fn: Callable[[], object], repeats: int) -> float:
    """`measure.cpu_ms` after one warm-up call, to 0.1 ms."""
    fn()
    return round(cpu_ms(fn, repeats)[0], 1)


def codec_floors(inputs: PairInputs, settings: ImageSettings, repeats: int) -> dict[str, Any]:
    """Median core-ms of the bare decode and encode calls the two stages cannot avoid in the pixel domain."""
    width, height = inputs.scene_size

    def decode(data: bytes, factor: int = 1) -> Image.Image:
        img = Image.open(io.BytesIO(data))
        if factor > 1:
            img.draft("RGB", (width // factor, height // factor))
        img.load()
        return img

    full = decode(inputs.scene)
    figures = {
        "scene_full_decode_core_ms": _cpu_ms(lambda: decode(inputs.scene), repeats),
        "scene_draft2_decode_core_ms": _cpu_ms(lambda: decode(inputs.scene, 2), repeats),
        "scene_draft8_decode_core_ms": _cpu_ms(lambda: decode(inputs.scene, 8), repeats),
        "product_decode_core_ms": _cpu_ms(lambda: decode(inputs.product), repeats),
        "mask_png_decode_core_ms": _cpu_ms(lambda: decode(inputs.mask), repeats),
        "output_encode_core_ms": _cpu_ms(
            lambda: full.save(io.BytesIO(), format="JPEG", quality=settings.output_quality), repeats
        ),
    }
    box_floor = sum(figures[k] for k in ("scene_draft2_decode_core_ms", "scene_full_decode_core_ms",
                                         "output_encode_core_ms"))
    figures["box_codec_floor_core_ms"] = round(box_floor, 1)
    figures["mask_codec_floor_core_ms"] = round(box_floor + figures["mask_png_decode_core_ms"], 1)
    figures["what"] = (
        "bare Pillow codec calls on the same inputs: the scene drafted by 2 (model crop) and in full (paste-back), "
        "the mask PNG (mask case only) and the output encode, summed per case as *_codec_floor_core_ms (the product, "
        "drafted in the stage, is left out of the sum)"
    )
    return figures


def bench_cpu_stages(
    *, scene_size: tuple[int, int] = (4000, 3000), product_size: tuple[int, int] = (1000, 1000), repeats: int = 15,
    settings: ImageSettings | None = None,
    pairs_per_scene: int = 8,
) -> dict[str, Any]:
    settings = settings or ImageSettings()
    inputs = pair_inputs(scene_size, product_size)
    keys = ["total", "preprocess", "postprocess", *CATEGORIES]
    cases: dict[str, dict[str, float]] = {}
    for case, use_mask in (("mask", True), ("box", False)):
        run_pair(inputs, settings, use_mask=use_mask)  # warm-up: imports, allocator, Pillow's plugin tables
        runs = [run_pair(inputs, settings, use_mask=use_mask) for _ in range(repeats)]
        cases[case] = {f"{k}_core_ms": round(statistics.median(r[k] for r in runs) * 1e3, 1) for k in keys}
        cases[case]["total_core_ms_min"] = round(min(r["total"] for r in runs) * 1e3, 1)
    shared: dict[str, Any] = {
        "pairs_per_scene": pairs_per_scene,
        "what": f"per pair, over {pairs_per_scene} consecutive pairs of one scene (a run ordered by scene, one task); "
        "median of `repeats` such groups",
    }
    for case, use_mask in (("mask", True), ("box", False)):
        groups = [
            run_scene_shared(inputs, settings, use_mask=use_mask, pairs=pairs_per_scene)
            for _ in range(max(1, repeats // pairs_per_scene) + 2)
        ]
        shared[case] = {f"{k}_core_ms": round(statistics.median(g[k] for g in groups) * 1e3, 1) for k in keys}
    forget_scenes()
    return {
        "total_core_ms_per_pair": cases["mask"]["total_core_ms"],
        "headline_case": "mask (PNG mask_uri region); see cases.box for the box form",
        "inputs": {
            "scene": f"{scene_size[0]}x{scene_size[1]} photo-like JPEG q92, {len(inputs.scene) / 1e6:.2f} MB",
            "product": f"{product_size[0]}x{product_size[1]} photo-like JPEG q92, {len(inputs.product) / 1e6:.2f} MB",
            "mask": f"8-bit grey PNG, {len(inputs.mask) / 1e3:.0f} kB; region bbox {inputs.box}",
            "output": f"{settings.output_format} q{settings.output_quality}, model crop {settings.resolution} px",
        },
        "repeats": repeats,
        "statistic": "median of per-pair process CPU time (core-ms); fetch excluded",
        "cases": cases,
        "scene_shared": shared,
        "floors": codec_floors(inputs, settings, repeats),
    }
