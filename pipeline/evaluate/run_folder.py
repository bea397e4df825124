"""A finished run folder as the evaluation and the review page read it: summary, configuration, rows, scenes.

Only a finished run is read (summary.json present: the inference job writes it last), so every pair has its one
row and no row is still being written. Images are found by their contract keys under the folder given, not by the
absolute `output_uri` the rows hold, so a copy of the folder (local, or another bucket) is read from where it is.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError

from pipeline.core.errors import JobError, PairError
from pipeline.core.storage import S3Config, join, read_bytes
from pipeline.inference import record
from pipeline.inference.config import RunConfig
from pipeline.inference.keys import image_key
from pipeline.inference.manifests import load_manifests
from pipeline.inference.metadata_row import PAIR_KEY


class RunNotFinished(JobError):
    """The folder is not a finished run (no summary.json): its rows may still be changing."""


@dataclass(frozen=True)
class FinishedRun:
    uri: str
    summary: dict
    config: RunConfig  # as recorded in config.json, reading through the evaluation's S3 settings
    rows: pa.Table  # the metadata rows (METADATA_SCHEMA), sorted by product_id, scene_id, variant
    scenes: pa.Table  # the scenes manifest the run read (scene_id, image_uri, mask_uri, x0, y0, x1, y1, ...)
    catalogue: pa.Table

    @property
    def variants(self) -> list[str]:
        return self.config.variant_names()

    def image_key(self, row: dict) -> str:
        """The key of a row's output image relative to the run folder (None-safe: a failed row has no image)."""
        return image_key(row["variant"], row["product_id"], row["scene_id"], _extension(row["output_uri"]))

    def image_uri(self, row: dict) -> str:
        return join(self.uri, self.image_key(row))


def _extension(output_uri: str | None) -> str:
    return posixpath.splitext(output_uri or "")[1].lstrip(".") or "png"


def _read_json(uri: str, s3: S3Config | None, what: str) -> dict:
    try:
        data = json.loads(read_bytes(uri, s3))
    except PairError as exc:
        raise JobError(f"{what}: {exc.message}") from None
    except ValueError as exc:
        raise JobError(f"{what} {uri} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise JobError(f"{what} {uri} does not hold a JSON object")
    return data


def open_run(run_uri: str, s3: S3Config | None = None) -> FinishedRun:
    """Read the finished run at `run_uri`; a folder without summary.json is refused with RunNotFinished."""
    run_uri = run_uri.rstrip("/")
    try:
        summary = _read_json(join(run_uri, "summary.json"), s3, "summary")
    except JobError:
        try:
            read_bytes(join(run_uri, "config.json"), s3)
        except PairError:
            raise JobError(f"{run_uri} is not a run folder (no config.json and no summary.json)") from None
        raise RunNotFinished(
            f"run {run_uri} has not finished: it has no summary.json (written last by the inference job), so its rows "
            "may still change; wait for the job to finish, or rerun its run id to complete it, then evaluate"
        ) from None
    recorded = _read_json(join(run_uri, "config.json"), s3, "config")
    try:
        config = RunConfig.model_validate({**recorded, "s3": (s3 or S3Config()).model_dump()})
    except ValidationError as exc:
        raise JobError(f"{run_uri}/config.json is not a configuration this version reads: {exc}") from None
    # The run may have been moved or copied: read everything from where it is now.
    output_uri, _, folder = run_uri.rpartition("/")
    config = config.model_copy(update={"output_uri": output_uri or ".", "run_id": folder})
    rows = record.read_metadata(config)
    rows = rows.take(pc.sort_indices(rows, [(c, "ascending") for c in PAIR_KEY]))
    manifests = load_manifests(config.catalogue_uri, config.scenes_uri, None, s3)
    return FinishedRun(uri=run_uri, summary=summary, config=config, rows=rows, scenes=manifests.scenes,
                       catalogue=manifests.catalogue)
