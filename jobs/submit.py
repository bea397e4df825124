"""Submit a tryall job to a Ray cluster, with a submission id that derives from the run id.

    tryall submit nightly --config configs/nightly.yaml --set run_id=2026-11-25 \\
        [--address http://127.0.0.1:8265] [--runtime-env infra/runtime_env.yaml] [--wait]

(`python -m jobs.submit ...` is the same command.) Any job of jobs.JOBS with settings can be submitted; its
settings model validates the configuration here.

The submission id is `<job>-<run_id>` (for example `nightly-2026-11-25`), so submitting the same run twice is
refused by the cluster (exit status 2): two drivers never write the same run folder. To continue a run after its job
stopped or failed, submit it again with `--attempt 2` (id `<job>-<run_id>-2`), which is refused while an earlier
attempt of the run is still pending or running. The equivalent with Ray's CLI, run from the repository root:

    ray job submit --address http://127.0.0.1:8265 --submission-id nightly-2026-11-25 --no-wait \\
      --runtime-env infra/runtime_env.yaml -- python -m jobs.nightly --config configs/nightly.yaml \\
      --set run_id=2026-11-25

The configuration is read and validated here first (an invalid one is reported with its field, exit status 2, and
nothing is submitted). The config file travels with the working directory, so it must lie inside it. `TRYALL_*`
settings variables of this shell do not reach the job: use `--set`.

Exit status: 0 submitted (with --wait: the job succeeded); 1 with --wait: the job failed or was stopped; 2 refused
(invalid configuration, duplicate submission id, earlier attempt still active, cluster unreachable).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from jobs.cli import settings_of
from jobs.registry import JOBS, default_prog
from pipeline.core.settings import ENV_PREFIX, ConfigError, JobSettings, load_settings
from pipeline.inference.config import MODEL_CACHE_ENV

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
DEFAULT_RUNTIME_ENV = "infra/runtime_env.yaml"


class SubmitError(Exception):
    """The submission is refused before or by the cluster; exit status 2."""


def submission_id(job: str, run_id: str, attempt: int = 1) -> str:
    return f"{job}-{run_id}" if attempt == 1 else f"{job}-{run_id}-{attempt}"


def load_local_config(job: str, path: str | None, overrides: list[str]) -> JobSettings:
    """The job's settings as it will see them: file and --set only (this shell's TRYALL_* settings are ignored)."""
    for name in sorted(k for k in os.environ if k.startswith(ENV_PREFIX) and k != MODEL_CACHE_ENV):
        print(f"warning: {name} is set here but does not reach the job; use --set instead", file=sys.stderr)
    return load_settings(settings_of(job), path, overrides, environment=False)


def entrypoint(job: str, config: str | None, overrides: list[str], working_dir: Path) -> str:
    """`python -m jobs.<job> --config <path relative to the working dir> --set ...`, shell-quoted."""
    args = ["python", "-m", JOBS[job].module]
    if config and "://" in str(working_dir):  # a remote package: the path is the user's to get right
        args += ["--config", config]
    elif config:
        resolved = Path(config).resolve()
        try:
            relative = resolved.relative_to(working_dir.resolve())
        except ValueError:
            raise SubmitError(
                f"--config {config} is outside the working directory {working_dir} that is uploaded with the job; "
                "put the config file in the repository (for example under configs/)"
            ) from None
        args += ["--config", relative.as_posix()]
    for item in overrides:
        args += ["--set", item]
    return shlex.join(args)


def read_runtime_env(path: str | None) -> dict[str, Any]:
    if not path:
        return {"working_dir": "."}
    try:
        env = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SubmitError(f"--runtime-env {path}: cannot be read: {exc}") from None
    if not isinstance(env, dict):
        raise SubmitError(f"--runtime-env {path}: must hold a mapping")
    return env


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() + ("-dirty" if dirty else "")


def _client(address: str):
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise SubmitError(f"cannot reach the Ray job server at {address}: {exc}") from None


def _refuse_if_earlier_attempt_active(client: Any, job: str, run_id: str, attempt: int) -> None:
    for earlier in range(1, attempt):
        sid = submission_id(job, run_id, earlier)
        try:
            info = client.get_job_info(sid)
        except RuntimeError:
            continue  # no such submission
        if not info.status.is_terminal():
            raise SubmitError(
                f"submission {sid} of run {run_id} is still {info.status}; stop it first "
                f"(ray job stop {sid}) or wait for it to end"
            )


def submit(job: str, cfg: JobSettings, command: str, runtime_env: dict[str, Any], address: str, attempt: int) -> str:
    client = _client(address)
    sid = submission_id(job, cfg.run_id, attempt)
    if attempt > 1:
        _refuse_if_earlier_attempt_active(client, job, cfg.run_id, attempt)
    metadata = {"tryall_job": job, "run_id": cfg.run_id, "attempt": str(attempt), "git_commit": git_commit()}
    if cfg.run_uri:
        metadata["run_uri"] = cfg.run_uri
    try:
        return client.submit_job(entrypoint=command, submission_id=sid, runtime_env=runtime_env, metadata=metadata)
    except RuntimeError as exc:
        if "already exists" in str(exc):
            raise SubmitError(
                f"the cluster refused submission id {sid}: a job with this id was already submitted, so run "
                f"{cfg.run_id} is already running or ran. Check it with `ray job status {sid}`; to continue it after "
                f"it stopped, submit again with --attempt {attempt + 1}; for a new run, choose a new run_id."
            ) from None
        raise SubmitError(f"submission {sid} failed: {exc}") from None


async def _follow(client: Any, sid: str) -> None:
    async for lines in client.tail_job_logs(sid):
        print(lines, end="", flush=True)


def wait(address: str, sid: str) -> int:
    client = _client(address)
    asyncio.run(_follow(client, sid))
    info = client.get_job_info(sid)
    print(f"\njob {sid}: {info.status}" + (f" ({info.message})" if info.message else ""))
    return 0 if str(info.status) == "SUCCEEDED" else 1


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    p = argparse.ArgumentParser(prog=prog or default_prog("submit"), description=JOBS["submit"].description)
    p.add_argument("job", choices=[name for name, entry in JOBS.items() if entry.submittable],
                   help="the job to run on the cluster")
    p.add_argument("--config", help="the job's YAML/JSON settings file, inside the working directory")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a setting (repeatable)")
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS,
                   help=f"the Ray job server (dashboard) URL; default $RAY_ADDRESS or {DEFAULT_ADDRESS}")
    p.add_argument("--runtime-env", default=DEFAULT_RUNTIME_ENV,
                   help=f"runtime environment YAML (default {DEFAULT_RUNTIME_ENV}; '' for just working_dir '.')")
    p.add_argument("--attempt", type=int, default=1,
                   help="2, 3, ... to continue a run whose earlier submission ended (id <job>-<run_id>-<attempt>)")
    p.add_argument("--wait", action="store_true", help="follow the job's logs until it ends; exit 1 if it failed")
    args = p.parse_args(argv)
    try:
        if args.attempt < 1:
            raise SubmitError("--attempt must be 1 or more")
        cfg = load_local_config(args.job, args.config, args.set)
        runtime_env = read_runtime_env(args.runtime_env)
        working_dir = Path(str(runtime_env.get("working_dir", ".")))
        command = entrypoint(args.job, args.config, args.set, working_dir)
        sid = submit(args.job, cfg, command, runtime_env, args.address, args.attempt)
    except (ConfigError, SubmitError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"submitted {sid}: {command}")
    print(f"  follow:  ray job logs --address {args.address} --follow {sid}")
    print(f"  status:  ray job status --address {args.address} {sid}")
    if cfg.run_uri:
        print(f"  outputs: {cfg.run_uri}/ (summary.json appears when the run has finished)")
    return wait(args.address, sid) if args.wait else 0


if __name__ == "__main__":
    sys.exit(main())
