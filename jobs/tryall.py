"""The `tryall` command: `tryall <job> [arguments]` runs that job's `main`; `tryall --help` lists the jobs.

    tryall nightly --config configs/nightly.yaml --set run_id=2026-11-25    # here, on this machine's Ray
    tryall submit nightly --config configs/nightly.yaml --set run_id=2026-11-25    # on the cluster
    tryall demo
    tryall nightly --help                                                    # every setting, with its default
"""

from __future__ import annotations

import argparse
import importlib
import sys

from jobs.registry import JOBS


def parser() -> argparse.ArgumentParser:
    listing = "\n".join(f"  {name:<10} {entry.description}" for name, entry in JOBS.items())
    p = argparse.ArgumentParser(
        prog="tryall", description=__doc__.strip().splitlines()[0],
        epilog=f"jobs:\n{listing}\n\n`tryall JOB --help` lists the job's arguments and settings.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("job", choices=list(JOBS), metavar="JOB", help="one of: " + ", ".join(JOBS))
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # Only the job's name is ours: everything after it, --help included, is the job's.
    job = parser().parse_args(argv[:1]).job
    return importlib.import_module(JOBS[job].module).main(argv[1:], prog=f"tryall {job}")


if __name__ == "__main__":
    sys.exit(main())
