"""The one list of tryall jobs, read by the `tryall` command (jobs.tryall) and by `jobs.submit`.

Each entry's module has `main(argv=None, prog=None) -> int`; `python -m <module>` runs it too, and that is what
`ray job submit ... -- python -m jobs.<name>` runs on the cluster. A job with settings (`submittable`) builds its
`main` with `jobs.cli.job_main(name, SettingsModel, function)`, so adding one is its settings model, its function
and one line here.
"""


from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JobEntry:
    module: str
    description: str  # one line: `tryall --help` and the job's own --help show it
    submittable: bool = True  # a cluster job with a settings model: `tryall submit <name>` takes it


JOBS: dict[str, JobEntry] = {
    "nightly": JobEntry("jobs.nightly", "the catalogue's new or changed products since the last finished run"),
    "backfill": JobEntry("jobs.backfill", "a slice of the catalogue (categories, product ids, a shard)"),
    "ab": JobEntry("jobs.ab", "one run, several variants (checkpoint and/or sampling), paired by seed"),
    "demo": JobEntry("jobs.demo", "the whole pipeline on a local Ray with a generated sample set and the tiny model",
                     submittable=False),
    "submit": JobEntry("jobs.submit", "submit a job to a Ray cluster, with a submission id <job>-<run_id>",
                       submittable=False),
    "evaluate": JobEntry("jobs.evaluate", "score a finished run (CLIP-I, DINO-I, FD-DINOv2, KID, paired A/B), write "
                         "its review page"),
    "train": JobEntry("jobs.train", "train a DTC on image pairs with Ray Train (a run_id resumes its checkpoints)"),
    "report": JobEntry("jobs.report", "write a finished run's review page, RUN_URI/report/index.html",
                       submittable=False),
}


def default_prog(name: str) -> str:
    """The command `python -m` runs for job `name` (argparse alone would call it `<name>.py`)."""
    return f"python -m {JOBS[name].module}"
