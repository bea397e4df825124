"""Dependencies: what the code imports is declared, versions live in requirements.lock, derived pins are current.

Offline: imports are read with ast, the declared distributions from pyproject.toml, their requirements from the
installed metadata (the venv `make setup` built with the lock as constraints).
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# Declared without being imported: fsspec loads s3fs itself for s3:// URIs.
LOADED_BY_PROTOCOL = {"s3fs"}
# pip freeze leaves out the installer's own tools; the venv brings them.
INSTALLER_TOOLS = {"pip", "setuptools", "wheel"}

sys.path.insert(0, str(INFRA))
import update_cluster_pins  # noqa: E402

sys.path.remove(str(INFRA))
normalize = update_cluster_pins.normalize


def names(requirements: list[str]) -> set[str]:
    return {normalize(Requirement(r).name) for r in requirements}


RUNTIME = names(PROJECT["dependencies"])
DEV = names(PROJECT["optional-dependencies"]["dev"])
LOCK = update_cluster_pins.read_pins((ROOT / "requirements.lock").read_text())


def imported_modules(*folders: str) -> dict[str, set[str]]:
    """Top-level modules imported anywhere under the folders (lazy imports inside functions too) -> files."""
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    found.setdefault(module.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def third_party(modules: dict[str, set[str]], local: set[str]) -> dict[str, set[str]]:
    """Distributions that provide the non-stdlib, non-local modules -> the files importing them."""
    providers = packages_distributions()
    found: dict[str, set[str]] = {}
    for module, files in modules.items():
        if module in sys.stdlib_module_names or module in local or module == "__future__":
            continue
        assert module in providers, f"{module} (imported by {sorted(files)}) is not installed"
        for dist in providers[module]:
            found.setdefault(normalize(dist), set()).update(files)
    return found


LOCAL = {"pipeline", "jobs"}


def test_every_package_the_library_imports_is_a_declared_dependency():
    used = third_party(imported_modules("pipeline", "jobs"), LOCAL)
    undeclared = {d: sorted(files) for d, files in used.items() if d not in RUNTIME}
    assert not undeclared, f"imported by pipeline/ or jobs/, missing from [project.dependencies]: {undeclared}"
    unused = RUNTIME - set(used) - LOADED_BY_PROTOCOL
    assert not unused, f"declared dependencies nothing in pipeline/ or jobs/ imports: {sorted(unused)}"


def test_test_only_packages_stay_out_of_the_library():
    used = third_party(imported_modules("pipeline", "jobs"), LOCAL)
    assert not {d: sorted(f) for d, f in used.items() if d in DEV}, "the library imports a dev-only package"
    assert not RUNTIME & DEV, "declared both as a dependency and in the dev extra"


def test_every_package_the_tests_and_benchmarks_import_is_declared():
    local = LOCAL | {"tests", "benchmarks", "conftest", "update_cluster_pins"}
    used = third_party(imported_modules("tests", "benchmarks"), local)
    undeclared = {d: sorted(files) for d, files in used.items() if d not in RUNTIME | DEV}
    assert not undeclared, f"imported by tests/ or benchmarks/, not in dependencies or the dev extra: {undeclared}"


def test_the_library_never_imports_benchmarks_or_tests():
    """Measurement lives beside the package: an installed tryall has no benchmarks/ or tests/ to import."""
    used = imported_modules("pipeline", "jobs")
    assert not {m: sorted(f) for m, f in used.items() if m in {"benchmarks", "tests"}}


def test_only_torch_is_pinned_in_pyproject():
    """Versions are the lock's; torch stays exact because pip would otherwise pick a CUDA build first."""
    requirements = [Requirement(r) for r in PROJECT["dependencies"] + PROJECT["optional-dependencies"]["dev"]]
    pinned = {normalize(r.name): str(r.specifier) for r in requirements if r.specifier}
    assert pinned == {"torch": f"=={LOCK['torch']}"}


def declared_closure() -> dict[str, str]:
    """Every distribution the runtime and dev requirements need on this machine (installed metadata) -> version."""
    closure: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    pending = [Requirement(r) for r in PROJECT["dependencies"] + PROJECT["optional-dependencies"]["dev"]]
    while pending:
        requirement = pending.pop()
        key = (normalize(requirement.name), frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = distribution(requirement.name)
        except PackageNotFoundError:
            pytest.fail(f"{requirement.name} is declared or required but not installed: run `make setup`")
        closure[key[0]] = Version(dist.version).public
        for text in dist.requires or []:
            sub = Requirement(text)
            extras = requirement.extras or {""}
            if sub.marker is None or any(sub.marker.evaluate({"extra": extra}) for extra in extras):
                pending.append(sub)
    return closure


def test_the_lock_pins_exactly_what_the_declared_dependencies_need():
    closure = declared_closure()
    stale = {n: (LOCK.get(n), v) for n, v in closure.items() if n in LOCK and LOCK[n] != v}
    assert not stale, f"installed versions differ from the lock (name: (lock, installed)); run `make setup`: {stale}"
    # A venv whose torch is the registry's CUDA build (Linux x86_64 without a local CPU wheel) also holds the CUDA
    # packages, which the lock leaves to the cluster pins.
    linux_only = set(update_cluster_pins.parse((INFRA / "requirements-cluster.txt").read_text())[2])
    missing = sorted(set(closure) - set(LOCK) - INSTALLER_TOOLS - linux_only)
    assert not missing, f"needed but not pinned in requirements.lock: {missing}"
    unneeded = sorted(set(LOCK) - set(closure))
    assert not unneeded, f"pinned in requirements.lock, needed by nothing declared: {unneeded}"


def test_the_cluster_pins_are_derived_from_the_current_lock():
    found = update_cluster_pins.problems(
        (ROOT / "requirements.lock").read_text(),
        (ROOT / "pyproject.toml").read_text(),
        (INFRA / "requirements-cluster.txt").read_text(),
    )
    assert not found, f"infra/requirements-cluster.txt is out of date (python infra/update_cluster_pins.py): {found}"


def test_the_cluster_pins_cover_the_image():
    _, from_lock, linux_only = update_cluster_pins.parse((INFRA / "requirements-cluster.txt").read_text())
    pinned = set(from_lock) | set(linux_only)
    default_extra = {
        normalize(Requirement(r).name) for r in distribution("ray").requires if 'extra == "default"' in r
    }
    assert default_extra and not default_extra - pinned, "ray[default] dependencies without a pin"
    assert {"torch", "triton", "nvidia-cudnn-cu13", "nvidia-nccl-cu13"} <= pinned
    assert not {"pytest", "pytest-timeout", "moto", "ruff"} & pinned, "test tools in the image"


LOCK_TEXT = "a==1\nb==2\n"
PYPROJECT_TEXT = '[project]\ndependencies = ["a[x]"]\n'


def generated(requirements=("a[x]",), from_lock=None, linux_only=None) -> str:
    return update_cluster_pins.render(list(requirements), from_lock or {"a": "1"}, linux_only or {"cuda": "13"})


def test_check_accepts_what_the_script_writes():
    assert update_cluster_pins.problems(LOCK_TEXT, PYPROJECT_TEXT, generated()) == []


@pytest.mark.parametrize(
    ("lock", "pyproject", "cluster", "expected"),
    [
        ("a==2\n", PYPROJECT_TEXT, generated(), "a==1: the lock has 2"),
        (LOCK_TEXT, '[project]\ndependencies = ["a[x]", "b"]\n', generated(), "pyproject.toml now has other ones"),
        (LOCK_TEXT, PYPROJECT_TEXT, generated(linux_only={"b": "2"}), "b==2: the lock pins it too"),
        (LOCK_TEXT, PYPROJECT_TEXT, generated(from_lock={"b": "2"}), "a: a dependency without a pin"),
        (LOCK_TEXT, PYPROJECT_TEXT, "a==1\ncuda==13\n", "the header is not the script's"),
    ],
    ids=["lock-bumped", "dependency-added", "linux-only-now-locked", "dependency-unpinned", "hand-written"],
)
def test_check_finds_a_stale_cluster_file(lock, pyproject, cluster, expected):
    assert any(expected in p for p in update_cluster_pins.problems(lock, pyproject, cluster))


def test_split_pins_refuses_to_contradict_the_lock():
    assert update_cluster_pins.split_pins({"a": "1", "b": "2"}, {"a": "1"}) == ({"a": "1"}, {"b": "2"})
    with pytest.raises(SystemExit, match="contradicts"):
        update_cluster_pins.split_pins({"a": "2"}, {"a": "1"})


def test_make_setup_installs_the_locked_versions_and_reinstalls_when_they_change():
    makefile = (ROOT / "Makefile").read_text()
    rule = re.search(r"^\$\(VENV\)/\.installed: (.+)\n((?:\t.+\n)+)", makefile, re.M)
    assert rule, "the setup rule"
    assert set(rule.group(1).split()) >= {"pyproject.toml", "requirements.lock"}
    recipe = rule.group(2)
    assert '-c requirements.lock "$(TORCH)"' in recipe
    assert '-c requirements.lock -e ".[dev]"' in recipe
    assert re.search(r"^TORCH \?= \$\(shell grep -m1 '\^torch==' requirements\.lock\)$", makefile, re.M)
