"""Fixtures for the model tests: tiny random models only, nothing from a hub."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from pipeline.model import DTC, load_dtc

from .helpers import build_tiny_pbe_pipeline


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
def s3_server(monkeypatch) -> Iterator[dict]:
    """A real S3-protocol server (moto) on 127.0.0.1 with one bucket; yields storage_options for fsspec."""
    import boto3
    from moto.server import ThreadedMotoServer

    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="models")
    try:
        yield {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
    finally:
        server.stop()
        os.environ.pop("MOTO_PORT", None)
