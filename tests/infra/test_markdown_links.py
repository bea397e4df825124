"""Every relative link of the repository's Markdown resolves: the file exists in the repository and so does the anchor.

Links to the web are not followed (the tests run offline). A Markdown file named in code (`NOTES.md`) must exist too:
a reader looks for it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".git", ".venv", "node_modules", "demo_output", "build", "dist"}
FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]+`")
INLINE_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$", re.M)
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def markdown_files() -> list[Path]:
    return sorted(
        p
        for p in ROOT.rglob("*.md")
        if not SKIP_DIRS & set(p.relative_to(ROOT).parts[:-1])
        and not any(part.endswith((".egg-info", "_cache")) for part in p.parts)
    )


def prose(text: str) -> str:
    """The text without fenced code blocks and code spans, where brackets are not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def links(text: str) -> list[str]:
    body = prose(text)
    return INLINE_LINK.findall(body) + REFERENCE_LINK.findall(body)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (but - and _), spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    for heading in HEADING.findall(FENCE.sub("", path.read_text())):
        base = slug(heading)
        n = counts.get(base, 0)
        counts[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken_links(path: Path, text: str | None = None) -> list[str]:
    """Relative links of `path` (or of `text`, read as if it were at `path`) that do not resolve."""
    broken = []
    for target in links(path.read_text() if text is None else text):
        if SCHEME.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.is_relative_to(ROOT) or not dest.exists():
            broken.append(f"{target}: no such file in the repository")
        elif anchor and dest.suffix == ".md" and anchor.lower() not in anchors(dest):
            broken.append(f"{target}: no heading with that anchor in {dest.relative_to(ROOT)}")
    return broken


def test_markdown_files_are_found():
    names = {str(p.relative_to(ROOT)) for p in markdown_files()}
    assert {"README.md", "infra/README.md", "infra/CLUSTER.md", "benchmarks/README.md", "docs/contracts.md"} <= names


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    assert not broken_links(path)


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_markdown_files_named_in_code_exist(path):
    named = {m.strip("`") for m in CODE_SPAN.findall(FENCE.sub("", path.read_text())) if m.endswith(".md`")}
    missing = [n for n in named if not (path.parent / n).exists() and not (ROOT / n).exists()]
    assert not missing, f"{path.relative_to(ROOT)} names Markdown files that are not in the repository: {missing}"


def test_the_checker_finds_broken_links():
    page = ROOT / "docs" / "contracts.md"
    text = "[ok](../README.md#development) [web](https://example.com) `[not](a-link.md)`\n"
    assert links(text) == ["../README.md#development", "https://example.com"]
    assert broken_links(page, text) == []
    text = "[gone](DESIGN.md) [anchor](../README.md#no-such-heading) [out](../../../etc/passwd)\n[ref]: missing.md\n"
    assert len(broken_links(page, text)) == 4


def test_slug_follows_github():
    assert slug("Models and checkpoints") == "models-and-checkpoints"
    assert slug("`cpu_stages`") == "cpu_stages"
    assert slug("infra/: running tryall on an AWS Ray cluster") == "infra-running-tryall-on-an-aws-ray-cluster"
    assert slug("A/B: variants") == "ab-variants"
