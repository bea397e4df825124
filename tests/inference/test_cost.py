"""The cost projection against the design notes' reference figures (g5.xlarge on demand, $1.006/h)."""

from __future__ import annotations

import pytest

from pipeline.inference.cost import G5_XLARGE_ON_DEMAND_USD_PER_HOUR, cost_projection, format_projection


def test_the_papers_6_4_seconds_per_image_cost_about_1_79_dollars_per_1000():
    p = cost_projection(640.0, 100, G5_XLARGE_ON_DEMAND_USD_PER_HOUR, basis="test")
    assert p["gpu_s_per_image"] == 6.4
    assert p["usd_per_1000_images"] == pytest.approx(6.4 * 1000 * 1.006 / 3600, abs=1e-4)
    assert round(p["usd_per_1000_images"], 2) == 1.79 and p["price"] == "g5.xlarge on-demand, us-east-1"
    assert round(cost_projection(10.0, 10, 1.006, basis="t")["usd_per_1000_images"], 2) == 0.28
    assert "$1.79 per 1000 images" in format_projection(p)


def test_another_price_and_no_images():
    p = cost_projection(3600.0, 1000, 2.0, basis="t")
    assert (p["gpu_s_per_image"], p["usd_per_1000_images"], p["price"]) == (3.6, 2.0, "cost.gpu_hourly_usd")
    none = cost_projection(5.0, 0, 1.006, basis="t")
    assert none["gpu_s_per_image"] is None and "no images" in format_projection(none)


def test_a_runs_summary_projects_its_cost_from_its_rows():
    import pyarrow as pa

    from pipeline.inference.config import RunConfig
    from pipeline.inference.metadata_row import METADATA_SCHEMA
    from pipeline.inference.record import build_summary

    cfg = RunConfig.model_validate({"run_id": "r", "catalogue_uri": "c", "scenes_uri": "s", "output_uri": "o",
                                    "cost": {"gpu_hourly_usd": 3.6}})
    rows = [{"status": "ok", "inference_s": 2.0}, {"status": "ok", "inference_s": 4.0},
            {"status": "failed", "error_reason": "write_error", "inference_s": 3.0}]
    table = pa.Table.from_pylist([{**dict.fromkeys(METADATA_SCHEMA.names), **r} for r in rows], schema=METADATA_SCHEMA)
    cost = build_summary(cfg, table, attempt_pairs=3, wall_s=10.0, gpu_s=9.0)["cost"]
    # 9 GPU seconds for 2 images: 4.5 s/image; at $3.6/h, $0.001/s, so $4.5 per 1000 images.
    assert (cost["gpu_s_per_image"], cost["usd_per_1000_images"], cost["images"]) == (4.5, 4.5, 2)
    assert RunConfig.model_validate({"run_id": "r", "catalogue_uri": "c", "scenes_uri": "s",
                                     "output_uri": "o"}).cost.gpu_hourly_usd == 1.006
