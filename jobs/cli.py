"""What every job shares: `--config` and `--set` arguments, logging, and exit statuses.

Exit status 0: the run finished (some pairs may have failed; summary.json says how many). 2: the job could not
run (invalid configuration, unusable manifests, unreachable output or model; nothing was computed), or it stopped
on a systemic failure (more than compute.max_errored_blocks blocks lost their worker: the rows finished so far are
kept, no summary.json; rerun the run id once the cause is fixed).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable

from pipeline.config import RunConfig, load_config
from pipeline.errors import JobError


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", help="YAML or JSON run configuration (TRYALL_* environment variables override it)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, highest precedence, e.g. --set sampling.steps=20 (repeatable)")
    p.add_argument("--log-level", default="INFO")
    return p


# The AWS SDK's DEBUG records print signed requests: the access key id, the session token (X-Amz-Security-Token) and
# the strings that were signed. Credentials must never reach a log, so these loggers stay at INFO whatever --log-level.
_CREDENTIAL_LOGGERS = ("botocore", "aiobotocore", "boto3", "s3transfer")


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in _CREDENTIAL_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(max(logging.INFO, logging.getLogger().getEffectiveLevel()))


def print_summary(summary: dict, run_uri: str) -> None:
    print(json.dumps(summary, indent=2))
    print(f"outputs: {run_uri}/ (images/, metadata/, summary.json, config.json)")


def with_job_defaults(cfg: RunConfig, *, incremental: bool) -> RunConfig:
    """Fill in what the configuration leaves to the job: `selection.incremental` when it is unset."""
    if cfg.selection.incremental is not None:
        return cfg
    return cfg.model_copy(update={"selection": cfg.selection.model_copy(update={"incremental": incremental})})


def run_job(args: argparse.Namespace, job: Callable[[RunConfig], int]) -> int:
    """Load the configuration and run `job`, turning job-level errors into a message and exit status 2."""
    setup_logging(args.log_level)
    try:
        cfg = load_config(args.config, args.set)
        return job(cfg)
    except JobError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return JobError.exit_code
