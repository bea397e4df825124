import json

import pytest

from pipeline.core.settings import parse_overrides, redact
from pipeline.imaging.settings import ImageSettings
from pipeline.inference.config import ConfigError, load_config

BASE = ["run_id=r1", "catalogue_uri=s3://b/c.parquet", "scenes_uri=s3://b/s.parquet", "output_uri=s3://b/out"]


def test_file_env_and_overrides_in_order_of_precedence(tmp_path, monkeypatch):
    path = tmp_path / "run.yaml"
    path.write_text("run_id: from-file\ncatalogue_uri: c\nscenes_uri: s\noutput_uri: o\n"
                    "sampling: {steps: 10, guidance: 3}\ncompute: {batch_size: 2}\n")
    monkeypatch.setenv("TRYALL_SAMPLING__STEPS", "20")
    monkeypatch.setenv("TRYALL_COMPUTE__BATCH_SIZE", "8")
    cfg = load_config(path, ["compute.batch_size=16"])
    assert cfg.run_id == "from-file"
    assert cfg.sampling.steps == 20  # env beats file
    assert cfg.sampling.guidance == 3  # file kept where nothing overrides it
    assert cfg.compute.batch_size == 16  # command line beats env


def test_json_file(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"run_id": "j", "catalogue_uri": "c", "scenes_uri": "s", "output_uri": "o"}))
    assert load_config(path).run_id == "j"


@pytest.mark.parametrize(
    ("override", "field", "reason"),
    [
        ("sampling.steps=0", "sampling.steps", "greater than or equal to 1"),
        ("sampling.scheduler=plms", "sampling.scheduler", "ddim"),
        ("sampling.resolution=500", "sampling.resolution", "multiple of 8"),
        ("run_id=../escape", "run_id", "letters, digits"),
        ("output.format=gif", "output.format", "jpeg"),
        ("sampling.stepz=3", "sampling.stepz", "Extra inputs"),
        ("compute.max_task_retries=-1", "compute.max_task_retries", "greater than or equal to 0"),
        ("compute.max_errored_blocks=-1", "compute.max_errored_blocks", "greater than or equal to 0"),
    ],
)
def test_invalid_values_name_the_field_and_reason(override, field, reason):
    with pytest.raises(ConfigError) as info:
        load_config(None, [*BASE, override])
    assert f"{field}:" in str(info.value)
    assert reason in str(info.value)


def test_all_problems_reported_together():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["sampling.steps=-1", "compute.batch_size=0"])
    text = str(info.value)
    for field in ("run_id", "catalogue_uri", "sampling.steps", "compute.batch_size"):
        assert f"{field}:" in text


def test_min_actors_above_max_rejected():
    with pytest.raises(ConfigError, match="gpu_actors_min"):
        load_config(None, [*BASE, "compute.gpu_actors_min=3", "compute.gpu_actors_max=2"])


def test_worker_loss_bounds_default_finite_and_settable(monkeypatch):
    """Work on a dying worker is retried a finite number of times by default (Ray Data's own default is forever)."""
    compute = load_config(None, BASE).compute
    assert (compute.max_task_retries, compute.max_errored_blocks) == (3, 10)
    monkeypatch.setenv("TRYALL_COMPUTE__MAX_TASK_RETRIES", "0")
    compute = load_config(None, [*BASE, "compute.max_errored_blocks=2"]).compute
    assert (compute.max_task_retries, compute.max_errored_blocks) == (0, 2)


def test_pairs_uri_selects_pairs_strategy_and_pairs_strategy_needs_it():
    assert load_config(None, [*BASE, "pairs_uri=s3://b/p.parquet"]).pairing.strategy == "pairs"
    with pytest.raises(ConfigError, match="pairs_uri"):
        load_config(None, [*BASE, "pairing.strategy=pairs"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not a mapping\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_overrides_parse_scalars_and_reject_garbage():
    assert parse_overrides(["a.b=20", "a.c=true", "d=x"]) == {"a": {"b": 20, "c": True}, "d": "x"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["novalue"])


def test_public_dict_has_no_secrets(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "SECRETVALUE")
    cfg = load_config(None, [*BASE[:3], "output_uri=s3://user:SECRETVALUE@bucket/out"])
    dumped = json.dumps(cfg.public_dict())
    assert "SECRETVALUE" not in dumped
    assert redact({"aws_secret_access_key": "x", "nested": {"token": "y"}}) == {
        "aws_secret_access_key": "<redacted>", "nested": {"token": "<redacted>"}}
    assert len(cfg.config_hash()) == 16


def test_image_settings_are_a_view_of_the_sections_and_follow_each_variant():
    """The image stages' settings are computed from sampling.resolution, image and output (defaults included), never
    a copy that a variant's overrides or a later change could leave stale."""
    cfg = load_config(None, [*BASE, "sampling.resolution=64", "image.dilate_px=12", "output.format=png",
                             "variants=[{name: a}, {name: b, sampling: {resolution: 128}}]"])
    settings = cfg.image_settings
    assert (settings.resolution, settings.dilate_px, settings.output_format) == (64, 12, "png")
    assert (settings.feather_px, settings.max_pixels) == (cfg.image.feather_px, cfg.image.max_pixels)
    assert cfg.for_variant("b").image_settings.resolution == 128
    assert cfg.for_variant("a").image_settings is settings  # built once per distinct value
    assert load_config(None, BASE).image_settings == ImageSettings()  # the defaults are the image stages' own
