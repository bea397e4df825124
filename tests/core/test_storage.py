"""core.storage's writes carry their Content-Type on S3 (moto's server), named by the key's extension unless given,
so images and pages served from a bucket show inline; local writes are unaffected."""

from __future__ import annotations

import pytest

from pipeline.core.storage import S3Config, content_type_of, read_bytes, write_bytes
from pipeline.imaging.settings import OUTPUT_EXTENSIONS
from pipeline.inference.keys import image_key


def test_the_type_comes_from_the_extension_and_compressions_name_none():
    for output_format, ext in OUTPUT_EXTENSIONS.items():  # every format the inference job writes
        assert content_type_of(f"s3://b/run/{image_key('v', 'p/1', 's.2', ext)}") == f"image/{output_format}"
    assert content_type_of("report/index.html") == "text/html"
    assert content_type_of("eval/summary.json") == "application/json"
    assert content_type_of("thumbs/scenes/S.JPG") == "image/jpeg"
    for key in ("metadata/part-0.parquet", "plan/pairs", "logs/x.tar.gz", "dir.png/x"):
        assert content_type_of(key) is None


@pytest.mark.integration
def test_s3_objects_carry_their_content_type(s3_server, s3_bucket):
    import boto3

    s3 = S3Config(endpoint_url=s3_server, region="us-east-1")
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    expected = {
        "run/images/v/p/s.jpg": "image/jpeg", "run/images/v/p/s.png": "image/png",
        "run/images/v/p/s.webp": "image/webp", "run/summary.json": "application/json",
    }
    for key in expected:
        write_bytes(f"s3://{s3_bucket}/{key}", b"bytes", s3)  # as the jobs call it: no type given
    write_bytes(f"s3://{s3_bucket}/run/report/index.html", b"<p>", s3, content_type="text/html; charset=utf-8")
    expected["run/report/index.html"] = "text/html; charset=utf-8"  # a type given wins
    write_bytes(f"s3://{s3_bucket}/run/metadata/part-0.parquet", b"PAR1", s3)
    expected["run/metadata/part-0.parquet"] = "binary/octet-stream"  # S3's own default where none is named
    for key, content_type in expected.items():
        assert client.head_object(Bucket=s3_bucket, Key=key)["ContentType"] == content_type, key
    assert read_bytes(f"s3://{s3_bucket}/run/images/v/p/s.webp", s3) == b"bytes"


def test_local_writes_ignore_the_type(tmp_path):
    write_bytes(str(tmp_path / "a" / "x.png"), b"png", content_type="image/png")
    assert (tmp_path / "a" / "x.png").read_bytes() == b"png" and [p.name for p in (tmp_path / "a").iterdir()] == [
        "x.png"]
