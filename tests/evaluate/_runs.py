"""A small finished A/B run for the evaluation and report tests, one variant per model family: the tiny DTC at 2
steps against the tiny random FLUX.2 [klein] (its own 4 steps), both at 64 px.

Two products on three scenes in both variants; the third scene's mask is empty, so its pairs fail (`mask_empty`) and
the run has failed rows to report.
"""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipeline.inference.config import load_config
from pipeline.inference.runner import run
from pipeline.synthetic.samples import write_sample_set

VARIANTS = "[{name: a, sampling: {steps: 2}}, {name: b, model: {source: klein-tiny}}]"
# The output whose image the evaluated copy lacks: the evaluation counts it, the page shows it as missing.
MISSING = ("lamp-000", "room-001", "b")


def make_ab_run(root: Path) -> Path:
    """Write the inputs under `root` and run them; returns the run folder."""
    sample = write_sample_set(str(root / "inputs"), n_products=2, n_scenes=2, scene_size=(160, 120))
    scenes = pq.read_table(sample.scenes_uri)
    empty = root / "inputs" / "masks" / "room-empty.png"
    buf = io.BytesIO()
    Image.new("L", (160, 120), 0).save(buf, format="PNG")
    empty.write_bytes(buf.getvalue())
    extra = {name: [None] for name in scenes.column_names}
    extra.update(scene_id=["room-empty"], image_uri=[scenes.column("image_uri")[0].as_py()], mask_uri=[str(empty)],
                 category=["decor"])
    pq.write_table(pa.concat_tables([scenes, pa.table(extra, schema=scenes.schema)]), sample.scenes_uri)
    cfg = load_config(None, [
        "run_id=ab-demo", f"catalogue_uri={sample.catalogue_uri}", f"scenes_uri={sample.scenes_uri}",
        f"output_uri={root / 'runs'}", "model.source=tiny", "sampling.resolution=64", "pairing.strategy=all",
        "output.format=png", "progress_interval_s=60", f"variants={VARIANTS}",
    ])
    result = run(cfg)
    assert result.summary["by_status"] == {"ok": 8, "failed": 4}, result.summary
    return Path(result.run_uri)
