"""The documentation cannot silently rot: every relative link in README.md, CHANGELOG.md and
docs/*.md names a file that exists in the repository, and the README stays short enough to read.

Links inside fenced code blocks are not links (they are examples), so they are skipped; so are
web addresses and in-page anchors, which a file check cannot judge.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_README_LINES = 160

# [text](target) and [text](target "title"); images too (the leading ! is irrelevant here).
_INLINE = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# [label]: target, a reference definition on its own line.
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # https:, mailto:, ...


def documents() -> list[Path]:
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]


def relative_links(text: str) -> list[tuple[int, str]]:
    """(line number, target without its #fragment) of every relative link outside code."""
    found: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        opening = _FENCE.match(line)
        if opening:
            if fence is None:
                fence = opening.group(1)
            elif opening.group(1) == fence:
                fence = None
            continue
        if fence is not None:
            continue
        # Inline code may show link syntax as an example; it is not a link.
        prose = re.sub(r"`[^`]*`", "", line)
        targets = [m.group(1) for m in _INLINE.finditer(prose)]
        reference = _REFERENCE.match(prose)
        if reference:
            targets.append(reference.group(1))
        for target in targets:
            if _EXTERNAL.match(target) or target.startswith("#"):
                continue
            path = target.split("#", 1)[0]
            if path:
                found.append((number, path))
    return found


def test_the_documents_exist() -> None:
    missing = [str(p.relative_to(ROOT)) for p in documents() if not p.is_file()]
    assert not missing, f"missing documents: {missing}"
    assert len(documents()) > 2, "docs/ holds no Markdown file"


@pytest.mark.parametrize("document", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_in_the_repository(document: Path) -> None:
    broken = []
    for number, target in relative_links(document.read_text(encoding="utf-8")):
        resolved = (document.parent / target).resolve()
        inside = resolved == ROOT or ROOT in resolved.parents
        if not inside or not resolved.exists():
            broken.append(f"{document.relative_to(ROOT)}:{number}: {target}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_readme_stays_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines (at most {MAX_README_LINES}): move detail into docs/")


def test_the_link_finder_sees_links_and_skips_code() -> None:
    # A finder that found nothing would pass every document: prove it finds what it should.
    text = "\n".join([
        "See [the guide](docs/api-guide.md#errors) and [web](https://example.com).",
        "[anchor](#limits) `[not](a-link.md)`",
        "```",
        "[inside](code-block.md)",
        "```",
        "[ref]: deploy/README.md",
    ])
    assert relative_links(text) == [(1, "docs/api-guide.md"), (6, "deploy/README.md")]
