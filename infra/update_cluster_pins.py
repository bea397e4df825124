"""Regenerate infra/requirements-cluster.txt: the image's pins that requirements.lock does not have.

    python infra/update_cluster_pins.py          # needs PyPI; run from anywhere, with any Python >= 3.11

requirements.lock is resolved on a CPU laptop/CI install. The cluster image (infra/Dockerfile) installs the same
project plus `ray[default]`, on Linux x86_64, where torch's wheel is the CUDA build with its CUDA libraries as pip
dependencies. This script asks pip to resolve exactly what the Dockerfile installs, for CPython 3.11 on manylinux
x86_64, with requirements.lock as constraints (nothing is installed or downloaded beyond package metadata and the
wheels pip needs to read it), and writes the packages the lock does not pin. It refuses to write when the resolution
contradicts the lock.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
OUT = ROOT / "infra" / "requirements-cluster.txt"
# What the Dockerfile installs on top of the project's dependencies.
EXTRA_REQUIREMENTS = ["ray[default,data]==2.60.0"]
PYTHON_VERSION = "3.11"
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(36, 4, -1)] + [
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
    "linux_x86_64",
]
HEADER = """\
# Extra pins for the cluster image (infra/Dockerfile), on top of ../requirements.lock (used together as constraints).
# requirements.lock is a CPU, laptop/CI install; the image also needs
#   - ray[default]: dashboard, job server and autoscaler on the head, agents on every node;
#   - torch's Linux x86_64 dependencies from PyPI: the CUDA 13.0 runtime libraries as pip packages, and triton.
# Resolved for CPython 3.11, manylinux x86_64, against requirements.lock; regenerate when requirements.lock changes
# (infra/README.md, "Updating the pins"). tests/infra checks these never contradict requirements.lock.
"""


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(text: str) -> dict[str, str]:
    """`name==version` lines of a requirements/constraints file, by normalized name."""
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[normalize(name.split("[", 1)[0])] = version.split(";", 1)[0].strip()
    return pins


def image_requirements(pyproject: Path) -> list[str]:
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return [*deps, *EXTRA_REQUIREMENTS]


def extra_pins(resolved: dict[str, str], lock: dict[str, str]) -> dict[str, str]:
    """Resolved packages the lock does not pin; a version that differs from the lock is an error."""
    conflicts = {n: (lock[n], v) for n, v in resolved.items() if n in lock and lock[n] != v}
    if conflicts:
        raise SystemExit(f"the resolution contradicts requirements.lock (name: (lock, resolved)): {conflicts}")
    return {n: v for n, v in sorted(resolved.items()) if n not in lock}


def render(pins: dict[str, str]) -> str:
    return HEADER + "".join(f"{n}=={v}\n" for n, v in sorted(pins.items()))


def resolve(requirements: list[str]) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        req_file = Path(tmp) / "requirements.in"
        req_file.write_text("\n".join(requirements) + "\n")
        report = Path(tmp) / "report.json"
        cmd = [
            sys.executable, "-m", "pip", "--isolated", "install", "--dry-run", "--ignore-installed",
            "--report", str(report), "--only-binary=:all:", "--implementation", "cp",
            "--python-version", PYTHON_VERSION, "--target", str(Path(tmp) / "unused"),
            "--index-url", "https://pypi.org/simple", "-r", str(req_file), "-c", str(LOCK),
        ]  # fmt: skip
        for platform in PLATFORMS:
            cmd += ["--platform", platform]
        subprocess.run(cmd, check=True)
        installs = json.loads(report.read_text())["install"]
    return {normalize(i["metadata"]["name"]): i["metadata"]["version"] for i in installs}


def main() -> None:
    resolved = resolve(image_requirements(ROOT / "pyproject.toml"))
    OUT.write_text(render(extra_pins(resolved, read_pins(LOCK.read_text()))))
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
