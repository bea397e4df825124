"""What every job shares: its entry (`job_main`), `--config`/`--set`/`--log-level`, logging and exit statuses.

Exit status 0: the run finished (some pairs may have failed; summary.json says how many). 2: the job could not
run (invalid configuration, unusable manifests, unreachable output or model; nothing was computed), or it stopped
on a systemic failure (more than compute.max_errored_blocks blocks lost their worker: the rows finished so far are
kept, no summary.json; rerun the run id once the cause is fixed).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from jobs.registry import JOBS, default_prog
from pipeline.core.errors import JobError
from pipeline.core.settings import JobSettings, load_settings, settings_help
from pipeline.inference.config import RunConfig

S = TypeVar("S", bound=JobSettings)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def job_parser(settings: type[JobSettings], description: str, prog: str) -> argparse.ArgumentParser:
    """`--config`, `--set`, `--log-level`; the help lists every setting of `settings` with its default."""
    p = argparse.ArgumentParser(prog=prog, description=description, epilog=settings_help(settings),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML or JSON settings file (TRYALL_* environment variables override it)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, highest precedence, e.g. --set sampling.steps=20 (repeatable; the "
                   "value is read as YAML)")
    p.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS, metavar="LEVEL",
                   help=f"one of {', '.join(LOG_LEVELS)} (default INFO)")
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


def run_job(args: argparse.Namespace, settings: type[S], job: Callable[[S], int]) -> int:
    """Load the job's settings and run `job`, turning job-level errors into a message and exit status 2."""
    setup_logging(args.log_level)
    try:
        cfg = load_settings(settings, args.config, args.set)
        return job(cfg)
    except JobError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return JobError.exit_code


@dataclass(frozen=True)
class JobMain(Generic[S]):
    """A job's `main(argv=None, prog=None) -> int`: its settings model and its function, named in jobs.JOBS."""

    name: str
    settings: type[S]
    function: Callable[[S], int]

    def parser(self, prog_name: str | None = None) -> argparse.ArgumentParser:
        return job_parser(self.settings, JOBS[self.name].description, prog_name or default_prog(self.name))

    def __call__(self, argv: list[str] | None = None, prog: str | None = None) -> int:
        return run_job(self.parser(prog).parse_args(argv), self.settings, self.function)


def job_main(name: str, settings: type[S], function: Callable[[S], int]) -> JobMain[S]:
    """The entry of job `name` (a key of jobs.JOBS): `main = job_main("nightly", RunConfig, nightly)`."""
    if name not in JOBS:
        raise KeyError(f"job {name!r} is not in jobs.JOBS")
    return JobMain(name, settings, function)


def settings_of(name: str) -> type[Any]:
    """The settings model of job `name`, from its module's `main`."""
    main = importlib.import_module(JOBS[name].module).main
    if not isinstance(main, JobMain):
        raise TypeError(f"{JOBS[name].module}.main is not built with jobs.cli.job_main")
    return main.settings
