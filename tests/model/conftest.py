"""Fixtures for the model tests: tiny random models only, nothing from a hub."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from pipeline.model import DTC, load_dtc

from ._helpers import build_tiny_pbe_pipeline


@pytest.fixture(scope="session")
def pbe_pipeline():
    return build_tiny_pbe_pipeline()


@pytest.fixture(scope="session")
def pbe_dir(pbe_pipeline, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pbe") / "pipeline"
    pbe_pipeline.save_pretrained(str(path), safe_serialization=True)
    return path


@pytest.fixture(scope="session")
def tiny_dtc() -> DTC:
    return load_dtc("tiny", device=torch.device("cpu"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_dtc, tmp_path_factory) -> Path:
    from pipeline.model import save_checkpoint

    return save_checkpoint(tiny_dtc, tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture
def s3_store(s3_server) -> Iterator[tuple[str, dict]]:
    """A fresh bucket on the shared moto S3 server (tests/conftest.py); yields (bucket, fsspec storage_options)."""
    import boto3

    bucket = f"models-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    yield bucket, {"endpoint_url": s3_server, "key": "testing", "secret": "testing"}
