"""The metadata row: its schema and the one function that builds it.

The last stage builds a row for every pair it receives and the driver builds one for every pair whose block got no
result; both go through `metadata_row`, so a new column is added here once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from pipeline.inference.config import RunConfig

METADATA_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("product_id", pa.string()),
        ("scene_id", pa.string()),
        ("variant", pa.string()),
        ("status", pa.string()),  # ok | failed
        ("error_reason", pa.string()),
        ("error_message", pa.string()),
        ("output_uri", pa.string()),
        ("seed", pa.int64()),
        ("model_id", pa.string()),
        ("scheduler", pa.string()),
        ("steps", pa.int32()),
        ("guidance", pa.float32()),
        ("resolution", pa.int32()),
        ("scene_width", pa.int32()),
        ("scene_height", pa.int32()),
        ("output_bytes", pa.int64()),
        ("preprocess_s", pa.float32()),
        ("inference_s", pa.float32()),
        ("postprocess_s", pa.float32()),
        ("finished_at", pa.timestamp("us", tz="UTC")),
        # The product image this row was made from: the nightly's "changed product" check compares it.
        ("product_uri", pa.string()),
        # The Ray node id of the inference actor that computed the pair (null when it never reached the model).
        ("inference_node", pa.string()),
        # The model family (dtc | flux2-klein), and the prompt a text-conditioned family was given (null for DTC).
        ("model_family", pa.string()),
        ("prompt", pa.string()),
        # The paste-back measured (null where nothing was pasted): mean CIEDE2000 between what was pasted and the
        # scene on the feathered band outside the region (the seam), the same inside the region (near 0: nothing
        # inserted), and pixels outside the dilated region that differ from the scene (anything but 0 is a bug).
        ("seam_delta_e", pa.float32()),
        ("region_delta_e", pa.float32()),
        ("outside_changed_px", pa.int64()),
        # The quality checks this pair failed (`quality` settings): seam, nothing_inserted, outside_changed. A
        # flagged pair stays `ok`; downstream systems filter on this.
        ("quality_flags", pa.list_(pa.string())),
        # Samples drawn for the pair: 1, or more when `quality.retries` sampled a flagged pair again.
        ("attempts", pa.int32()),
    ]
)
QUALITY_COLUMNS = ("seam_delta_e", "region_delta_e", "outside_changed_px")
# A pair's identity: exactly one metadata row per value of these columns.
PAIR_KEY = ("product_id", "scene_id", "variant")
# What `metadata_row` builds: every column but `finished_at`, which the writer stamps when the driver receives the row.
ROW_SCHEMA = METADATA_SCHEMA.remove(METADATA_SCHEMA.get_field_index("finished_at"))


def metadata_row(
    cfg: RunConfig,
    pair: Mapping[str, Any],
    *,
    status: str,
    error_reason: str | None = None,
    error_message: str | None = None,
    output_uri: str | None = None,
    model_id: str | None = None,
    scene_size: tuple[int, int] = (0, 0),
    output_bytes: int = 0,
    preprocess_s: float = 0.0,
    inference_s: float = 0.0,
    postprocess_s: float = 0.0,
    inference_node: str | None = None,
    prompt: str | None = None,
    quality: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One pair's row (ROW_SCHEMA's columns). `cfg` is the configuration of the pair's variant; `pair` holds at least
    product_id, scene_id, variant, seed and product_uri. Empty strings are recorded as null. `quality`: the
    paste-back's measures (QUALITY_COLUMNS), `quality_flags` and `attempts`, where the pair got that far."""
    return {
        "run_id": cfg.run_id,
        "product_id": pair["product_id"],
        "scene_id": pair["scene_id"],
        "variant": pair["variant"],
        "status": status,
        "error_reason": error_reason or None,
        "error_message": error_message or None,
        "output_uri": output_uri or None,
        "seed": int(pair["seed"]),
        "model_id": model_id or cfg.model.source,
        "scheduler": cfg.scheduler_name,
        "steps": cfg.sampling.steps,
        "guidance": cfg.sampling.guidance,
        "resolution": cfg.sampling.resolution,
        "scene_width": int(scene_size[0]),
        "scene_height": int(scene_size[1]),
        "output_bytes": int(output_bytes),
        "preprocess_s": float(preprocess_s),
        "inference_s": float(inference_s),
        "postprocess_s": float(postprocess_s),
        "product_uri": pair.get("product_uri"),
        "inference_node": inference_node,
        "model_family": None if cfg.model.family == "auto" else cfg.model.family,
        "prompt": prompt,
        **{name: (quality or {}).get(name) for name in QUALITY_COLUMNS},
        "quality_flags": list((quality or {}).get("quality_flags") or []),
        "attempts": int((quality or {}).get("attempts") or (1 if status == "ok" else 0)),
    }
