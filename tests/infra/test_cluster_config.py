"""ray_cluster.yaml against Ray's own cluster-config validation, offline (nothing here talks to AWS).

`ray up` runs `prepare_config` (merge with the AWS defaults, setup commands, docker checks, per-type worker limits)
and then `validate_config` (ray-schema.json plus cross-field checks) before it touches AWS; both run here on the file
as written and on the commented g5.12xlarge alternative. Each node type's node_config is also checked against
botocore's RunInstances input model, the call Ray makes with it.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import botocore.session
import botocore.validate
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "ray_cluster.yaml"
CACHE_DIR = "/mnt/nvme/tryall-model-cache"
GPU_FLAG = "--gpus all"

# vCPUs and GPUs of the instance types the file uses (AWS instance-type specifications).
INSTANCE_SPECS = {
    "m6i.2xlarge": {"CPU": 8, "GPU": 0},
    "c6i.4xlarge": {"CPU": 16, "GPU": 0},
    "g5.xlarge": {"CPU": 4, "GPU": 1},
    "g5.12xlarge": {"CPU": 48, "GPU": 4},
}
ALT_BEGIN = "# --- g5.12xlarge alternative (begin)"
ALT_END = "# --- g5.12xlarge alternative (end)"


def load(text: str | None = None) -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text() if text is None else text)


def with_alternative() -> dict:
    """The file with the commented g5.12xlarge node type uncommented, as its comment tells the reader to do."""
    lines = CLUSTER_YAML.read_text().splitlines()
    begin = next(i for i, line in enumerate(lines) if line.strip() == ALT_BEGIN)
    end = next(i for i, line in enumerate(lines) if line.strip() == ALT_END)
    block = [re.sub(r"^(\s*)# ", r"\1", line) for line in lines[begin + 1 : end]]
    return load("\n".join(lines[:begin] + block + lines[end + 1 :]))


@pytest.fixture(scope="module")
def config() -> dict:
    return load()


@pytest.fixture(scope="module", params=["as_written", "g5.12xlarge_alternative"])
def any_config(request) -> dict:
    return load() if request.param == "as_written" else with_alternative()


def test_raw_file_passes_rays_validator(any_config):
    validate_config(copy.deepcopy(any_config))


def test_prepared_config_passes_rays_validator(any_config):
    prepared = prepare_config(copy.deepcopy(any_config))
    validate_config(prepared)


def test_alternative_block_adds_the_4_gpu_type():
    types = with_alternative()["available_node_types"]
    assert types["gpu_worker_4x"]["node_config"]["InstanceType"] == "g5.12xlarge"
    assert types["gpu_worker_4x"]["resources"] == {"CPU": 48, "GPU": 4}


def test_rays_defaults_do_not_leak_in(config):
    """prepare_config merges the AWS defaults shallowly: anything we leave out comes from Ray's example config,
    whose setup commands pip-install Ray on every node. Every such key is set here, so nothing installs at setup."""
    prepared = prepare_config(copy.deepcopy(config))
    for key in ("setup_commands", "head_setup_commands", "worker_setup_commands", "file_mounts"):
        assert key in config, f"{key} must be set explicitly"
    commands = prepared["head_setup_commands"] + prepared["worker_setup_commands"]
    for node_type in prepared["available_node_types"].values():
        commands += node_type.get("worker_setup_commands", [])
    assert commands and not [c for c in commands if "pip install" in c or "conda" in c]
    assert prepared["provider"] == config["provider"]
    assert prepared["docker"] == config["docker"]


def test_head_runs_no_pipeline_work(config):
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    assert head["max_workers"] == 0
    assert "InstanceMarketOptions" not in head["node_config"], "the head must not be a spot instance"


def test_worker_types_scale_from_zero(any_config):
    types = any_config["available_node_types"]
    workers = {name: t for name, t in types.items() if name != any_config["head_node_type"]}
    assert workers
    for name, node_type in workers.items():
        assert node_type["min_workers"] == 0, name
        assert node_type["max_workers"] >= 1, name
        assert node_type["node_config"]["InstanceMarketOptions"] == {"MarketType": "spot"}, name


def test_global_max_workers_covers_the_default_types(config):
    types = config["available_node_types"]
    assert config["max_workers"] >= sum(t["max_workers"] for t in types.values())


def test_gpu_types_advertise_their_gpus_and_cpu_types_none(any_config):
    gpu_types = 0
    for name, node_type in any_config["available_node_types"].items():
        spec = INSTANCE_SPECS[node_type["node_config"]["InstanceType"]]
        resources = node_type["resources"]
        assert resources.get("GPU", 0) == spec["GPU"], name
        assert resources["CPU"] <= spec["CPU"], name
        gpu_types += spec["GPU"] > 0
    assert gpu_types >= 1
    assert any_config["available_node_types"]["gpu_worker"]["node_config"]["InstanceType"] == "g5.xlarge"
    assert any_config["available_node_types"]["cpu_worker"]["resources"]["CPU"] > 0


def effective_docker(config: dict, node_type: str) -> list[str]:
    """docker run options the launcher uses for a node type (its merge: global docker, then the type's docker)."""
    docker = {**config["docker"], **config["available_node_types"][node_type].get("docker", {})}
    role = "head" if node_type == config["head_node_type"] else "worker"
    return docker.get("run_options", []) + docker.get(f"{role}_run_options", [])


def test_only_gpu_types_get_the_gpus(any_config):
    for name, node_type in any_config["available_node_types"].items():
        options = effective_docker(any_config, name)
        assert (GPU_FLAG in options) == (node_type["resources"].get("GPU", 0) > 0), name
        assert f"-v {CACHE_DIR}:{CACHE_DIR}" in options, name
        assert f"-e TRYALL_MODEL_CACHE_DIR={CACHE_DIR}" in options, name


def test_gpu_types_check_cuda_in_their_own_setup(any_config):
    for node_type in any_config["available_node_types"].values():
        if node_type["resources"].get("GPU", 0):
            commands = node_type["worker_setup_commands"]
            assert any("torch.cuda" in c for c in commands)
            assert any("TRYALL_MODEL_CACHE_DIR" in c for c in commands), "replaces the global cache check"


def test_image_and_ecr_login_agree_on_registry_and_region(config):
    region = config["provider"]["region"]
    image = config["docker"]["image"]
    match = re.fullmatch(r"(<ACCOUNT_ID>\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com)/tryall:<IMAGE_TAG>", image)
    assert match, image
    registry, image_region = match.groups()
    assert image_region == region
    login = next(c for c in config["initialization_commands"] if "docker login" in c)
    assert f"get-login-password --region {region} " in login
    assert login.rstrip().endswith(f"--password-stdin {registry}")
    assert config["docker"]["pull_before_run"] is False


def test_nodes_use_instance_profiles_not_keys(any_config):
    assert "aws_credentials" not in any_config["provider"]
    head_type = any_config["head_node_type"]
    for name, node_type in any_config["available_node_types"].items():
        arn = node_type["node_config"]["IamInstanceProfile"]["Arn"]
        profile = "tryall-ray-head" if name == head_type else "tryall-ray-worker"
        assert arn == f"arn:aws:iam::<ACCOUNT_ID>:instance-profile/{profile}", name


def test_node_configs_are_valid_run_instances_requests(any_config):
    """The parameters Ray passes to EC2 RunInstances, checked against botocore's service model (offline)."""
    shape = botocore.session.get_session().get_service_model("ec2").operation_model("RunInstances").input_shape
    validator = botocore.validate.ParamValidator()
    for name, node_type in any_config["available_node_types"].items():
        request = yaml.safe_load(
            yaml.safe_dump(node_type["node_config"])
            .replace("<ACCOUNT_ID>", "123456789012")
            .replace("<AMI_ID>", "ami-0123456789abcdef0")
        )
        request.update(
            MinCount=1,
            MaxCount=1,
            SubnetId="subnet-0123456789abcdef0",
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "ray-cluster-name", "Value": "tryall"}]}],
        )
        report = validator.validate(request, shape)
        assert not report.has_errors(), f"{name}: {report.generate_report()}"
        assert request["MetadataOptions"]["HttpTokens"] == "required", name


def test_start_commands(config):
    head = " ".join(config["head_start_ray_commands"])
    assert "ray start --head" in head
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert "--dashboard-host=127.0.0.1" in head, "the dashboard/job API has no auth: loopback only, reach it via SSH"
    workers = " ".join(config["worker_start_ray_commands"])
    assert "ray start --address=$RAY_HEAD_IP:6379" in workers


def test_nothing_is_synced_to_the_nodes(config):
    assert config["file_mounts"] == {}
    assert config["cluster_synced_files"] == []


def test_nodes_are_terminated_not_stopped(config):
    assert config["provider"]["type"] == "aws"
    assert config["provider"]["cache_stopped_nodes"] is False


def test_training_has_its_own_gpu_type_from_zero(config):
    """configs/train.yaml's workers fit the training type and request the resource only it advertises."""
    train = yaml.safe_load((ROOT / "configs" / "train.yaml").read_text())["compute"]
    node_type = config["available_node_types"]["train_gpu_worker"]
    assert node_type["node_config"]["InstanceType"] == "g5.12xlarge" and node_type["min_workers"] == 0
    resource = train["accelerator_resource"]
    assert node_type["resources"][resource] == node_type["resources"]["GPU"] == 4
    assert all(resource not in t["resources"] for n, t in config["available_node_types"].items()
               if n != "train_gpu_worker")
    assert train["use_gpu"] and train["num_workers"] <= node_type["max_workers"] * 4
    assert train["cpus_per_worker"] * 4 <= node_type["resources"]["CPU"]
