"""The bench report: one JSON document, and the table printed from it."""

from __future__ import annotations

from typing import Any

from pipeline.inference.cost import G5_XLARGE_ON_DEMAND_USD_PER_HOUR, cost_projection, format_projection

HEADLINES = (
    ("model", "speedup"),
    ("pipeline", "efficiency"),
    ("pipeline", "overhead_ms_per_pair"),
    ("cpu_stages", "total_core_ms_per_pair"),
)


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The four headline figures, by dotted name (None for a part that did not run)."""
    return {f"{part}.{key}": (report.get(part) or {}).get(key) for part, key in HEADLINES}


def machine_line(machine: dict[str, Any]) -> str:
    load = machine.get("load_average")
    return (f"{machine.get('cpu_model')}, {machine.get('cpu_cores')} cores, GPU {machine.get('gpu')}, torch "
            f"{machine['versions'].get('torch')}, ray {machine['versions'].get('ray')}, load {load}")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(report: dict[str, Any]) -> str:
    lines = [f"machine: {machine_line(report['machine'])}"]
    model = report.get("model")
    if model:
        lines.append("")
        lines.append(f"model: {model['config']} at {model['resolution']} px on {model['device']}, guidance "
                     f"{model['guidance']}" + (f"  ({model['note']})" if model.get("note") else ""))
        cols = ("path", "dtype", "batch", "scheduler", "steps", "seconds_per_image", "cpu_seconds_per_image",
                "peak_gpu_gib", "speedup_vs_naive")
        rows = [[_fmt(r.get(c)) for c in cols] for r in model["rows"]]
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
        lines.append("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
        lines.extend("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows)
        lines.append(f"speedup = {model['speedup']} ({model['speedup_compares']}); naive vs fast max pixel diff "
                     f"{model['naive_vs_fast_max_pixel_diff']}")
        fastest = min((r["seconds_per_image"] for r in model["rows"] if r.get("seconds_per_image")), default=None)
        if fastest is not None:
            basis = f"the fastest row's seconds per image on {model['device']}"
            lines.append(format_projection(cost_projection(fastest, 1, G5_XLARGE_ON_DEMAND_USD_PER_HOUR, basis=basis)))
        klein = model.get("klein")
        if klein:
            for r in klein["rows"]:
                lines.append(f"klein: {klein['config']} at {klein['resolution']} px, batch {r['batch']}, {r['steps']} "
                             f"steps: {_fmt(r['seconds_per_image'])} s/image, {_fmt(r['cpu_seconds_per_image'])} CPU "
                             f"s/image, peak GPU {_fmt(r['peak_gpu_gib'])} GiB")
    pipe = report.get("pipeline")
    if pipe:
        lines.append("")
        lines.append(f"pipeline: efficiency {_fmt(pipe['efficiency'])} (model alone "
                     f"{_fmt(pipe['model_only_seconds_per_pair'])} s/pair, end to end "
                     f"{_fmt(pipe['end_to_end_seconds_per_pair'])} s/pair); framework overhead (noop model) "
                     f"{_fmt(pipe['overhead_ms_per_pair'])} ms/pair wall, {_fmt(pipe['overhead_core_ms_per_pair'])} "
                     "core-ms/pair")
    cpu = report.get("cpu_stages")
    if cpu:
        lines.append("")
        lines.append(f"cpu_stages: {cpu['inputs']['scene']}, product {cpu['inputs']['product']}")
        for case, figures in cpu["cases"].items():
            parts = ", ".join(f"{k.removesuffix('_core_ms')} {v}" for k, v in figures.items()
                              if k.endswith("_core_ms") and k != "total_core_ms")
            lines.append(f"  {case}: total {figures['total_core_ms']} core-ms/pair ({parts})")
        shared = cpu.get("scene_shared")
        if shared:
            lines.append(
                f"  scene shared by {shared['pairs_per_scene']} consecutive pairs: mask "
                f"{shared['mask']['total_core_ms']}, box {shared['box']['total_core_ms']} core-ms/pair"
            )
        floors = cpu.get("floors")
        if floors:
            lines.append(
                f"  codec floors (bare Pillow calls): box {floors['box_codec_floor_core_ms']}, mask "
                f"{floors['mask_codec_floor_core_ms']} core-ms/pair (scene full decode "
                f"{floors['scene_full_decode_core_ms']}, drafted by 2 {floors['scene_draft2_decode_core_ms']}, output "
                f"encode {floors['output_encode_core_ms']}, mask PNG {floors['mask_png_decode_core_ms']})"
            )
    mem = report.get("memory")
    if mem:
        lines.append("")
        for run in mem["runs"]:
            lines.append(f"memory: {run['pairs']} pairs: driver peak {run['driver_peak_rss_mib']} MiB, largest "
                         f"worker peak {run['worker_peak_rss_mib']} MiB ({run['ms_per_pair']} ms/pair)")
        lines.append(f"  ratios last/first: driver {mem['driver_ratio']}, worker {mem['worker_ratio']}; within 1.5x: "
                     f"{mem['within_1_5x']}")
    train = report.get("train")
    if train:
        lines.append("")
        lines.append(f"train: {train['source']} at {train['resolution']} px on {train['device']} "
                     f"({train['autocast']}), batch {train['batch_size']}: {_fmt(train['samples_per_s'])} samples/s "
                     f"per worker, peak {_fmt(train['peak_memory_gib'])} GiB ({train['peak_memory_kind']})")
    quality = report.get("demo_quality")
    if quality:
        lines.append("")
        lines.append(f"demo_quality: region PSNR (dB) on {quality['pairs']} held-out pairs at "
                     f"{quality['plan']['resolution']} px, {quality['plan']['steps']} DDIM steps, guidance "
                     f"{quality['plan']['guidance']}")
        for name, stats in quality["region_psnr_db"].items():
            lines.append(f"  {name:<24} mean {stats['mean']:>6}  min {stats['min']:>6}  max {stats['max']:>6}")
        for name, diff in quality.items():
            if name.endswith("_db") and name != "region_psnr_db":
                lines.append(f"  {name}: {diff['mean']} (95% CI {diff['ci95'][0]} .. {diff['ci95'][1]})")
    lines.append("")
    lines.extend(f"{name} = {_fmt(value)}" for name, value in headline(report).items())
    return "\n".join(lines)
