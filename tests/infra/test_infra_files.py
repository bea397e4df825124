"""infra/: IAM policies, the job runtime environment, the image's pins and Dockerfile, the build script. Offline."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml
from moto.iam.policy_validation import IAMPolicyDocumentValidator
from ray._private.runtime_env.packaging import _zip_files
from ray.dashboard.modules.dashboard_sdk import parse_runtime_env_args
from ray.runtime_env import RuntimeEnv

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
CLUSTER_YAML = ROOT / "ray_cluster.yaml"
CACHE_DIR = "/mnt/nvme/tryall-model-cache"
OUTPUT_PREFIX = "arn:aws:s3:::tryall-output/runs/"
PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*>")
SECRET_PATTERNS = [
    re.compile(r"aws_access_key_id", re.I),
    re.compile(r"aws_secret_access_key", re.I),
    re.compile(r"aws_session_token", re.I),
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
]


def infra_files() -> list[Path]:
    return sorted(p for p in INFRA.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def cluster_config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def policy(name: str) -> dict:
    return json.loads((INFRA / name).read_text())


def filled(text: str) -> str:
    """A policy as it is attached, placeholders filled with sample values."""
    return text.replace("<ACCOUNT_ID>", "123456789012")


# --- no secrets, placeholders documented ------------------------------------------------------------------------


@pytest.mark.parametrize("path", [CLUSTER_YAML, *infra_files()], ids=lambda p: str(p.relative_to(ROOT)))
def test_no_secrets(path):
    text = path.read_text()
    for pattern in SECRET_PATTERNS:
        assert not pattern.search(text), f"{path.name}: {pattern.pattern}"


def test_every_placeholder_is_explained_in_the_readme():
    readme = (INFRA / "README.md").read_text()
    used = set()
    for path in [CLUSTER_YAML, *INFRA.glob("*.json"), INFRA / "runtime_env.yaml"]:
        used |= set(PLACEHOLDER.findall(path.read_text()))
    assert used >= {"<ACCOUNT_ID>", "<AMI_ID>", "<IMAGE_TAG>"}
    assert not used - set(PLACEHOLDER.findall(readme)), "placeholders the README does not explain"


# --- IAM ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["iam-policy.json", "iam-autoscaler-policy.json", "iam-ecr-pull-policy.json"])
def test_policies_are_valid_iam_documents(name):
    # moto's implementation of IAM's policy grammar checks (actions, ARNs, condition operators), run in-process.
    IAMPolicyDocumentValidator(filled((INFRA / name).read_text())).validate()
    for statement in policy(name)["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert not [a for a in actions if "*" in a], "no wildcard actions"


def _as_list(value):
    return value if isinstance(value, list) else [value]


def allowed(doc: dict, action: str, resource: str, prefix: str | None = None) -> bool:
    """Enough of IAM's evaluation for these Allow-only policies: action, resource and an s3:prefix StringLike."""
    for statement in doc["Statement"]:
        if action not in _as_list(statement["Action"]):
            continue
        if not any(fnmatch.fnmatchcase(resource, r) for r in _as_list(statement["Resource"])):
            continue
        condition = statement.get("Condition", {})
        assert set(condition) <= {"StringLike"}, "only s3:prefix conditions expected here"
        patterns = condition.get("StringLike", {}).get("s3:prefix")
        if patterns is not None and (prefix is None or not any(fnmatch.fnmatchcase(prefix, p) for p in patterns)):
            continue
        return True
    return False


WRITE_ACTIONS = ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]


def test_s3_writes_are_confined_to_the_output_prefix():
    doc = policy("iam-policy.json")
    for statement in doc["Statement"]:
        for action in _as_list(statement["Action"]):
            assert action.startswith("s3:")
            if not action.startswith(("s3:Get", "s3:List")):
                assert all(r.startswith(OUTPUT_PREFIX) for r in _as_list(statement["Resource"])), statement["Sid"]
    for action in WRITE_ACTIONS:
        assert allowed(doc, action, OUTPUT_PREFIX + "2026-11-25/images/default/p1/s1.jpg")
        assert allowed(doc, action, OUTPUT_PREFIX + "2026-11-25/summary.json")
        for resource in [
            "arn:aws:s3:::tryall-output/elsewhere/x",
            "arn:aws:s3:::tryall-output",
            "arn:aws:s3:::tryall-catalogue/manifests/catalogue.parquet",
            "arn:aws:s3:::tryall-models/dtc/model.safetensors",
            "arn:aws:s3:::some-other-bucket/runs/x",
        ]:
            assert not allowed(doc, action, resource), (action, resource)


def test_s3_reads_cover_inputs_models_and_reruns_and_nothing_else():
    doc = policy("iam-policy.json")
    for resource in [
        "arn:aws:s3:::tryall-catalogue/manifests/catalogue.parquet",
        "arn:aws:s3:::tryall-catalogue/images/products/p1.jpg",
        "arn:aws:s3:::tryall-models/dtc/v1/unet.safetensors",
        OUTPUT_PREFIX + "2026-11-25/metadata/part-0.parquet",
    ]:
        assert allowed(doc, "s3:GetObject", resource), resource
    assert not allowed(doc, "s3:GetObject", "arn:aws:s3:::tryall-catalogue/private/x")
    assert not allowed(doc, "s3:GetObject", "arn:aws:s3:::tryall-models/other/x")
    for bucket, prefix in [("tryall-catalogue", "manifests/"), ("tryall-catalogue", "images/p"),
                           ("tryall-models", "dtc/v1/"), ("tryall-output", "runs/2026-11-25/metadata/")]:  # fmt: skip
        assert allowed(doc, "s3:ListBucket", f"arn:aws:s3:::{bucket}", prefix), (bucket, prefix)
    assert not allowed(doc, "s3:ListBucket", "arn:aws:s3:::tryall-output", "")
    assert not allowed(doc, "s3:ListBucket", "arn:aws:s3:::tryall-catalogue", "private/")


def test_autoscaler_policy_is_scoped_to_this_cluster():
    config = cluster_config()
    doc = policy("iam-autoscaler-policy.json")
    by_action = {a: s for s in doc["Statement"] for a in _as_list(s["Action"])}
    terminate = by_action["ec2:TerminateInstances"]
    assert terminate["Condition"] == {"StringEquals": {"ec2:ResourceTag/ray-cluster-name": config["cluster_name"]}}
    pass_role = by_action["iam:PassRole"]
    worker_profiles = {
        t["node_config"]["IamInstanceProfile"]["Arn"].rsplit("/", 1)[1]
        for name, t in config["available_node_types"].items()
        if name != config["head_node_type"]
    }
    assert _as_list(pass_role["Resource"]) == [f"arn:aws:iam::<ACCOUNT_ID>:role/{p}" for p in worker_profiles]
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
    assert "ec2:RunInstances" in by_action and "ec2:CreateTags" in by_action
    assert not [a for a in by_action if a.startswith("s3:")]


def test_policies_use_the_clusters_region():
    region = cluster_config()["provider"]["region"]
    for name in ["iam-autoscaler-policy.json", "iam-ecr-pull-policy.json"]:
        regions = set(re.findall(r"arn:aws:(?:ec2|ecr):([a-z0-9-]+):", (INFRA / name).read_text()))
        assert regions == {region}, name


# --- runtime environment ----------------------------------------------------------------------------------------


def runtime_env() -> dict:
    return parse_runtime_env_args(runtime_env=str(INFRA / "runtime_env.yaml"))


def test_runtime_env_is_what_ray_job_submit_accepts():
    env = runtime_env()
    RuntimeEnv(**env)  # Ray's own validation of the fields
    assert set(env) == {"working_dir", "excludes", "env_vars"}
    assert env["working_dir"] == "."
    assert all(isinstance(v, str) for v in env["env_vars"].values())
    assert env["env_vars"]["TRYALL_MODEL_CACHE_DIR"] == CACHE_DIR
    assert env["env_vars"]["AWS_DEFAULT_REGION"] == cluster_config()["provider"]["region"]
    assert not [k for k in env["env_vars"] if re.search("SECRET|PASSWORD|TOKEN|KEY|CREDENTIAL", k)]


def test_runtime_env_does_not_override_run_configuration():
    """TRYALL_<FIELD> variables override every job's config file; only the cache dir (not a run field) is set."""
    assert [k for k in runtime_env()["env_vars"] if k.startswith("TRYALL_")] == ["TRYALL_MODEL_CACHE_DIR"]


def test_runtime_env_excludes_upload_only_the_code(tmp_path):
    """Ray's own packaging (what `ray job submit` uploads) applied to a sample checkout."""
    tree = [
        "pipeline/__init__.py", "pipeline/model/unet.py", "jobs/nightly.py", "configs/nightly.yaml",
        "pyproject.toml", "infra/runtime_env.yaml",
        ".git/HEAD", ".venv/lib/site.py", "tests/test_x.py", "tests/infra/test_y.py", "demo_output/a.png",
        "pipeline/__pycache__/x.cpython-311.pyc", "tryall.egg-info/PKG-INFO", ".pytest_cache/v", ".ruff_cache/c",
        "benchmarks/results/run.json",
    ]  # fmt: skip
    repo = tmp_path / "repo"
    for rel in tree:
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text("x")
    out = tmp_path / "pkg.zip"
    _zip_files(str(repo), runtime_env()["excludes"], str(out), include_gitignore=True)
    files = {n for n in zipfile.ZipFile(out).namelist() if not n.endswith("/")}
    assert files == {
        "pipeline/__init__.py", "pipeline/model/unet.py", "jobs/nightly.py", "configs/nightly.yaml",
        "pyproject.toml", "infra/runtime_env.yaml",
    }  # fmt: skip


# --- image ------------------------------------------------------------------------------------------------------


def dockerfile() -> str:
    return (INFRA / "Dockerfile").read_text()


def test_dockerfile_base_image_is_pinned():
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", dockerfile(), re.M).group(1)
    assert base == "python:3.11-slim-bookworm"
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", dockerfile(), re.M)


def test_dockerfile_installs_pinned_deps_and_runs_as_non_root():
    text = dockerfile()
    assert "pip install --no-deps -r infra/requirements-cluster.txt" in text, "exactly the derived pins"
    assert len(re.findall(r"&& pip check$", text, re.M)) == 2, "after the dependencies and after the project"
    assert not re.search(r"==\d", text), "versions belong to requirements.lock (and the pins derived from it)"
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in {"root", "0"}
    assert re.search(r"^ENV HOME=/home/ray$", text, re.M), "`ray up` reads HOME from the image"
    assert f"TRYALL_MODEL_CACHE_DIR={CACHE_DIR}" in text
    assert not re.search(r"^ENTRYPOINT", text, re.M), "the cluster launcher runs `docker run ... bash` and docker exec"


def test_dockerfile_user_owns_the_hosts_cache_dir():
    uid = re.search(r"^ARG APP_UID=(\d+)$", dockerfile(), re.M).group(1)
    init = cluster_config()["initialization_commands"][0]
    assert f'sudo chown {uid}:{uid} "$CACHE"' in init


def test_dockerfile_copies_only_files_that_exist_and_are_not_ignored():
    sources = []
    for line in re.findall(r"^COPY (.+)$", dockerfile(), re.M):
        sources += line.split()[:-1]
    assert sources
    ignore = (INFRA / "Dockerfile.dockerignore").read_text()
    for source in sources:
        assert (ROOT / source).exists(), source
        assert f"!{source}" in ignore, f"{source} is excluded from the build context"


# --- build script -----------------------------------------------------------------------------------------------


def build(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ECR_", "IMAGE_"))}
    return subprocess.run(
        ["bash", str(INFRA / "build_and_push.sh")], env={**clean, "DRY_RUN": "1", **env},
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def test_build_script_builds_logs_in_and_pushes_the_tagged_image():
    result = build({"AWS_ACCOUNT_ID": "123456789012", "AWS_REGION": "us-east-1", "IMAGE_TAG": "git-abc"})
    assert result.returncode == 0, result.stderr
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/tryall:git-abc"
    lines = result.stdout.splitlines()
    assert lines[-1] == image
    commands = "\n".join(lines)
    assert f"+ docker build --platform linux/amd64 --file infra/Dockerfile --tag {image} ." in commands
    assert "aws ecr get-login-password --region us-east-1 | docker login --username AWS --password-stdin" in commands
    assert f"+ docker push {image}" in commands
    assert commands.index("docker build") < commands.index("docker login") < commands.index("docker push")


def test_build_script_requires_an_account_id():
    result = build({})
    assert result.returncode != 0
    assert "AWS_ACCOUNT_ID" in result.stderr
    assert build({"AWS_ACCOUNT_ID": "12345"}).returncode == 2


def test_build_script_is_strict_bash():
    text = (INFRA / "build_and_push.sh").read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert os.access(INFRA / "build_and_push.sh", os.X_OK)
    subprocess.run(["bash", "-n", str(INFRA / "build_and_push.sh")], check=True)
