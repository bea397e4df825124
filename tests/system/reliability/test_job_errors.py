"""Job-level errors stop the job before any GPU is requested: exit status 2, a clear message, nothing computed.

`build_dataset` (the only place that asks Ray for GPU actors) and `ray.init` are replaced by functions that fail the
test, so each case proves the job stopped before Ray Data was even started.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from jobs import ab as ab_job
from jobs import nightly
from pipeline.core.model_sources import MODEL_NAMES
from pipeline.core.storage import S3Config
from pipeline.inference import checks, runner
from pipeline.synthetic.samples import parquet_bytes, write_sample_set

from ._support import s3_config, s3fs_for, write_config

pytestmark = pytest.mark.integration


@pytest.fixture
def no_gpu_requested(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the job reached Ray Data: a job error must stop it before GPUs are requested")

    monkeypatch.setattr(runner, "build_dataset", forbidden)
    monkeypatch.setattr(runner.ray, "init", forbidden)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return write_sample_set(str(tmp_path_factory.mktemp("inputs")), n_products=2, n_scenes=2)


def _config(sample, out: str, **overrides) -> dict:
    config = {"run_id": "job-error", "catalogue_uri": sample.catalogue_uri, "scenes_uri": sample.scenes_uri,
              "output_uri": out, "model": {"source": "noop", "allow_random_weights": True}}
    for key, value in overrides.items():
        config[key] = value if not isinstance(value, dict) else {**config.get(key, {}), **value}
    return config


def _fails(tmp_path, capsys, config: dict, *messages: str, extra: tuple[str, ...] = ()) -> str:
    code = nightly.main(["--config", write_config(tmp_path / "job.yaml", config), *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: "), err
    for message in messages:
        assert message in err, err
    return err


def _no_images_local(out) -> None:
    assert not list(out.rglob("images")), list(out.rglob("*"))


def test_unreadable_and_missing_manifests(no_gpu_requested, sample, tmp_path, capsys):
    garbage = tmp_path / "catalogue.parquet"
    garbage.write_bytes(b"PAR1 this is not parquet at all")
    out = tmp_path / "out"
    _fails(tmp_path, capsys, _config(sample, str(out), catalogue_uri=str(garbage),
                                     scenes_uri=str(tmp_path / "nope.parquet")),
           "catalogue manifest", "cannot be read as Parquet", "scenes manifest", "does not exist")
    _no_images_local(out)


def test_duplicate_ids_and_empty_variant_are_manifest_errors(no_gpu_requested, sample, tmp_path, capsys):
    catalogue = tmp_path / "catalogue.parquet"
    catalogue.write_bytes(parquet_bytes(pa.table({"product_id": ["p1", "p1", "p2"], "image_uri": ["a", "b", "c"]})))
    scenes = tmp_path / "scenes.parquet"
    scenes.write_bytes(parquet_bytes(pa.table({"scene_id": ["s", "s"], "image_uri": ["x", "y"], "x0": [0, 0],
                                               "y0": [0, 0], "x1": [5, 5], "y1": [5, 5]})))
    out = tmp_path / "out"
    _fails(tmp_path, capsys, _config(sample, str(out), catalogue_uri=str(catalogue), scenes_uri=str(scenes)),
           "duplicate product_id values: 'p1'", "duplicate scene_id values: 's'")

    pairs = tmp_path / "pairs.parquet"
    pairs.write_bytes(parquet_bytes(pa.table({"product_id": [sample.product_ids[0]] * 2,
                                              "scene_id": [sample.scene_ids[0]] * 2, "variant": ["", "b"]})))
    _fails(tmp_path, capsys, _config(sample, str(out), pairs_uri=str(pairs)), "'variant' has 1 empty values")
    pairs.write_bytes(parquet_bytes(pa.table({"product_id": [sample.product_ids[0]] * 2,
                                              "scene_id": [sample.scene_ids[0]] * 2})))
    _fails(tmp_path, capsys, _config(sample, str(out), pairs_uri=str(pairs)), "duplicate (product_id, scene_id")
    _no_images_local(out)


def test_invalid_configuration(no_gpu_requested, sample, tmp_path, capsys):
    out = tmp_path / "out"
    _fails(tmp_path, capsys, _config(sample, str(out)), "sampling.steps", "greater than or equal to 1",
           extra=("--set", "sampling.steps=0"))
    _fails(tmp_path, capsys, _config(sample, str(out), run_id="../escape"), "run_id")
    _fails(tmp_path, capsys, _config(sample, str(out), compute={"batch_sise": 4}), "compute.batch_sise")
    _no_images_local(out)


def test_unreachable_bucket_and_endpoint(no_gpu_requested, sample, s3_server, tmp_path, capsys):
    _fails(tmp_path, capsys, _config(sample, "s3://no-such-bucket/runs", s3=s3_config(s3_server)),
           "cannot write to output s3://no-such-bucket/runs/job-error")
    # Nothing listens on port 9 of the loopback: connection refused, retried, then a job error.
    closed = {"endpoint_url": "http://127.0.0.1:9", "region": "us-east-1", "max_attempts": 2}
    _fails(tmp_path, capsys, _config(sample, "s3://tryall-out/runs", s3=closed), "cannot write to output")


def test_production_jobs_need_a_named_trained_model(no_gpu_requested, sample, tmp_path, capsys):
    """nightly, backfill and ab never fall back to a random model: no source, or a random-weight one, is a job error
    naming the setting; `model.allow_random_weights: true` lets a random one run."""
    out = tmp_path / "out"
    unset = {k: v for k, v in _config(sample, str(out)).items() if k != "model"}
    _fails(tmp_path, capsys, unset, "model.source is not set")
    for source in ("tiny", "small", "sd15", "noop"):
        _fails(tmp_path, capsys, _config(sample, str(out), model={"source": source, "allow_random_weights": False}),
               f"model.source: '{source}' has random weights", "model.allow_random_weights: true")
    variants = [{"name": "a", "model": {"source": "demo"}}, {"name": "b", "model": {"source": "tiny"}}]
    ab = {**unset, "variants": variants}
    code = ab_job.main(["--config", write_config(tmp_path / "ab.yaml", ab)])
    err = capsys.readouterr().err
    assert code == 2 and "variants.b.model.source: 'tiny' has random weights" in err, err
    assert "variants.b.model.allow_random_weights: true" in err, err
    _no_images_local(out)


def test_missing_checkpoint(no_gpu_requested, sample, s3_server, s3_bucket, tmp_path, capsys):
    out = tmp_path / "out"
    _fails(tmp_path, capsys, _config(sample, str(out), model={"source": str(tmp_path / "no-such-checkpoint")}),
           "no checkpoint there")
    _fails(tmp_path, capsys, _config(sample, str(out), model={"source": f"s3://{s3_bucket}/models/dtc-v1"},
                                     s3=s3_config(s3_server)), "no checkpoint there")
    # A bare word is a model name or a local path: a misspelt name stops the job here, not in the GPU actor.
    _fails(tmp_path, capsys, _config(sample, str(out), model={"source": "tinyy"}),
           f"model.source tinyy: no checkpoint there and it is not a model name ({', '.join(MODEL_NAMES)})")
    empty = tmp_path / "empty-checkpoint"
    (empty / "unet").mkdir(parents=True)
    (empty / "dtc.json").write_text("{}")
    _fails(tmp_path, capsys, _config(sample, str(out), model={"source": str(empty)}), "no safetensors weights")
    _no_images_local(out)


def test_pickle_checkpoints_are_refused(no_gpu_requested, sample, s3_server, s3_bucket, tmp_path, capsys):
    """Checkpoints are safetensors only: a .bin/.ckpt source, or a directory of pickles, is a job error."""
    out = tmp_path / "out"
    for name in ("model.bin", "dtc.ckpt", "weights.pt"):
        (tmp_path / name).write_bytes(b"\x80\x04 pickle bytes that must never be loaded")
        _fails(tmp_path, capsys, _config(sample, str(out), model={"source": str(tmp_path / name)}),
               "pickle-format checkpoint, refused")
    _fails(tmp_path, capsys, _config(sample, str(out), model={"source": "model.bin"}), "pickle-format checkpoint")
    pickled = tmp_path / "pickled-checkpoint"
    (pickled / "unet").mkdir(parents=True)
    (pickled / "dtc.json").write_text("{}")
    (pickled / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04")
    _fails(tmp_path, capsys, _config(sample, str(out), model={"source": f"file://{pickled}"}),
           "diffusion_pytorch_model.bin is a pickle-format checkpoint, refused")

    fs = s3fs_for(s3_server)
    fs.pipe(f"{s3_bucket}/models/old/model.ckpt", b"\x80\x04")
    fs.pipe(f"{s3_bucket}/models/old/config.json", b"{}")
    _fails(tmp_path, capsys, _config(sample, str(out), model={"source": f"s3://{s3_bucket}/models/old"},
                                     s3=s3_config(s3_server)), "model.ckpt is a pickle-format checkpoint")
    _no_images_local(out)


def test_checkpoint_with_safetensors_passes_the_check(sample, s3_server, s3_bucket):
    """The check refuses pickles, not checkpoints that also carry them next to safetensors weights."""
    fs = s3fs_for(s3_server)
    fs.pipe(f"{s3_bucket}/models/ok/unet/diffusion_pytorch_model.safetensors", b"x")
    fs.pipe(f"{s3_bucket}/models/ok/unet/diffusion_pytorch_model.bin", b"x")
    fs.pipe(f"{s3_bucket}/models/ok/dtc.json", b"{}")  # a checkpoint says which family it is
    from pipeline.inference.config import RunConfig

    cfg = RunConfig(run_id="r", catalogue_uri=sample.catalogue_uri, scenes_uri=sample.scenes_uri, output_uri="/x",
                    model={"source": f"s3://{s3_bucket}/models/ok"}, s3=S3Config(**s3_config(s3_server)))
    checks.check_model_source(cfg)
