"""Shared fixtures: a real S3 protocol server (moto's, on 127.0.0.1) and a real local Ray cluster."""

from __future__ import annotations

import os

import pytest


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_addoption(parser):
    parser.addoption("--run-bench", action="store_true",
                     help="also run the tests marked bench: benchmark parts end to end (make test-bench)")


def pytest_collection_modifyitems(config, items):
    skip_bench = pytest.mark.skip(reason="a benchmark part end to end: make test-bench (pytest --run-bench) runs it")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    cuda = _cuda_available()
    for item in items:
        if "bench" in item.keywords and not config.getoption("--run-bench"):
            item.add_marker(skip_bench)
        if "gpu" in item.keywords and not cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _no_scene_from_an_earlier_test():
    """The CPU stages remember the last scene they decoded (per process): each test starts without one."""
    from pipeline.inference import postprocess, preprocess, stages

    preprocess.PREPARE_SCENES.clear()
    postprocess.COMPOSITE_SCENES.clear()
    for last in (stages.PREPARE_SCENE_FILE, stages.PREPARE_MASK_FILE, stages.COMPOSITE_SCENE_FILE):
        last.clear()


@pytest.fixture
def one_torch_thread():
    """Torch on one thread: the machines tests run on are small and shared, and oversubscribed CPU threads make
    tiny-model steps many times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on a free loopback port; yields its endpoint URL. Credentials are dummies."""
    from moto.server import ThreadedMotoServer

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh bucket on the moto server, named after the test."""
    import boto3

    name = "t-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:50].strip("-")
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory, s3_server):
    """A local Ray with a fake GPU resource (the model then runs on CPU inside the 'GPU' actor).

    Started after the S3 server so its workers inherit the dummy AWS credentials.
    """
    import ray

    temp = tmp_path_factory.mktemp("ray")
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, _temp_dir=str(temp), log_to_driver=False)
    yield ray
    ray.shutdown()
