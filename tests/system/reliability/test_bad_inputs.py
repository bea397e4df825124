"""The bad-input corpus through the real pipeline in one run: moto S3, local Ray with a fake GPU, the tiny model.

Every pair must end as exactly one metadata row with the expected status and stable reason, a message a person can
act on, and (when ok) an upright image of the scene's size under the run's prefix, whatever its ids hold.
"""

from __future__ import annotations

import io
from collections import Counter

import pytest
from PIL import Image

from jobs import nightly
from pipeline.core.storage import S3Config

from ._corpus import write_corpus
from ._support import TINY, accounting, read_json, read_rows, s3_config, s3fs_for, write_config

pytestmark = pytest.mark.integration


def test_bad_input_corpus_end_to_end(ray_local, s3_server, s3_bucket, tmp_path):
    corpus = write_corpus(f"s3://{s3_bucket}/inputs", S3Config(**s3_config(s3_server)))
    config = {
        "run_id": "corpus",
        "catalogue_uri": corpus.catalogue_uri,
        "scenes_uri": corpus.scenes_uri,
        "pairs_uri": corpus.pairs_uri,
        "output_uri": f"s3://{s3_bucket}/runs",
        **TINY,
        "output": {"format": "png"},
        "compute": {"batch_size": 4},
        "s3": s3_config(s3_server),
    }
    assert nightly.main(["--config", write_config(tmp_path / "corpus.yaml", config)]) == 0

    fs = s3fs_for(s3_server)
    run = f"{s3_bucket}/runs/corpus"
    rows = read_rows(fs, run)
    expected = {c.key: c for c in corpus.cases}
    assert len(expected) == len(corpus.cases)  # the corpus itself names each pair once
    assert accounting(rows, set(expected)) == {"rows": len(expected), "lost": 0, "duplicated": 0, "unexpected": 0}

    by_key = {(r["product_id"], r["scene_id"], r["variant"]): r for r in rows}
    wrong = []
    for key, case in expected.items():
        row = by_key[key]
        if (row["status"], row["error_reason"]) != (case.status, case.reason):
            wrong.append(f"{case.name}: got {row['status']}/{row['error_reason']} ({row['error_message']}), "
                         f"expected {case.status}/{case.reason}")
            continue
        if case.status == "failed":
            # A message a person can act on: it names the input or says what to change, not just a type name.
            assert row["error_message"] and len(row["error_message"]) > 20, case.name
            assert row["output_uri"] is None, case.name
        else:
            assert row["error_message"] is None and row["output_uri"].startswith(f"s3://{run}/images/"), case.name
            out = Image.open(io.BytesIO(fs.cat(row["output_uri"])))
            assert out.size == case.size == (row["scene_width"], row["scene_height"]), case.name
    assert not wrong, "\n".join(wrong)

    # Keys built from hostile ids stay one escaped segment each, under the run's prefix: the bucket holds the
    # inputs, the run folder, and nothing else; the images are exactly the ok rows' outputs.
    keys = [k.removeprefix(f"{s3_bucket}/") for k in fs.find(s3_bucket)]
    assert all(k.startswith(("inputs/", "runs/corpus/")) for k in keys), keys
    images = {f"s3://{s3_bucket}/{k}" for k in keys if k.startswith("runs/corpus/images/")}
    assert images == {r["output_uri"] for r in rows if r["status"] == "ok"}
    for uri in images:
        segments = uri.removeprefix(f"s3://{run}/images/").split("/")
        assert len(segments) == 3 and not any(s in (".", "..") or s.startswith(".") for s in segments), uri

    summary = read_json(fs, f"{run}/summary.json")
    assert summary["pairs"] == len(expected)
    assert summary["by_status"] == dict(Counter({"ok": 0, "failed": 0}) + Counter(c.status for c in corpus.cases))
    assert summary["by_error_reason"] == dict(sorted(Counter(c.reason for c in corpus.cases if c.reason).items()))
