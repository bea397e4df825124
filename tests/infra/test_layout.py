"""The layout docs/architecture.md describes holds: which package may import which, and no job reaches into another's
private names. Read with ast, offline."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# package -> the tryall packages its modules may import (besides itself).
ALLOWED = {
    "core": set(),
    "imaging": {"core"},
    "model": {"core"},
    "synthetic": {"core", "imaging"},
    "inference": {"core", "imaging", "model"},
    "train": {"core", "imaging", "model"},
    "evaluate": {"core", "imaging", "model", "inference"},
}


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every `import pipeline.x` / `from pipeline.x import a, b` in a file, lazy ones too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
    return found


def test_each_package_imports_only_what_the_architecture_allows():
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / "pipeline" / package).rglob("*.py")):
            for module, names in _imports(path):
                parts = module.split(".")
                if parts[0] != "pipeline":
                    continue
                # `from pipeline import x` names packages in `names`; `from pipeline.x import ...` in the module
                targets = names if len(parts) == 1 else [parts[1]]
                wrong += [f"{path.relative_to(ROOT)}: {module} ({t})" for t in targets
                          if t != package and t not in allowed]
    assert not wrong, "imports the architecture does not allow:\n" + "\n".join(wrong)


def test_no_module_imports_another_packages_private_names():
    wrong = []
    for path in sorted([*(ROOT / "pipeline").rglob("*.py"), *(ROOT / "jobs").rglob("*.py")]):
        own = path.relative_to(ROOT).parts[:2]
        for module, names in _imports(path):
            if module.startswith("pipeline.") and tuple(module.split(".")[:2]) != own:
                wrong += [f"{path.relative_to(ROOT)}: {module}.{n}" for n in names if n.startswith("_")]
    assert not wrong, "private names imported across packages:\n" + "\n".join(wrong)
