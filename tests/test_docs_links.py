"""Every relative link in README.md, CONTRIBUTING.md, CHANGELOG.md and docs/**/*.md points
at a file that exists and, with ``#anchor``, at a heading (or ``<a id>``) that exists there,
with GitHub's anchor rules. Links to other sites are not fetched."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"`+[^`\n]*`+")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)
_HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"", re.I)
_INLINE_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")


def documents() -> list[Path]:
    named = [ROOT / name for name in ("README.md", "CONTRIBUTING.md", "CHANGELOG.md")]
    return [p for p in named if p.exists()] + sorted((ROOT / "docs").rglob("*.md"))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link text kept, lower case, punctuation dropped
    (letters, digits, ``_``, ``-`` and spaces stay), spaces become ``-``."""
    text = _INLINE_LINK.sub(r"\1", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = _FENCE.sub("", path.read_text())
    found: set[str] = set(_HTML_ANCHOR.findall(text))
    seen: dict[str, int] = {}
    for match in _HEADING.finditer(text):
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    text = _FENCE.sub("", path.read_text())
    text = _CODE_SPAN.sub("", text)
    return [m.group(1) for m in _LINK.finditer(text)]


def broken(path: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{target}: no such file {dest.relative_to(root)}")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{target}: no heading #{anchor} in {dest.relative_to(root)}")
    return problems


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(path: Path) -> None:
    assert broken(path) == []


def test_the_checker_sees_broken_links(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## Wire format: `headers`\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n## Same heading\n\n## Same heading\n\n"
        "[ok](other.md#wire-format-headers) [ok](#same-heading-1) [ok](https://x.invalid/y)\n"
        "[bad](missing.md) [bad](other.md#nope) [bad](#title-2)\n"
        "`[not a link](missing-too.md)`\n```\n[not a link](missing-three.md)\n```\n"
    )
    assert broken(page, root=tmp_path) == [
        "missing.md: no such file missing.md",
        "other.md#nope: no heading #nope in other.md",
        "#title-2: no heading #title-2 in page.md",
    ]


def test_slug_follows_github() -> None:
    assert slug("Embedded SQL log: `sqlite:///path.db`, `postgresql://user@host/db`") == (
        "embedded-sql-log-sqlitepathdb-postgresqluserhostdb"
    )
    assert slug("`outbox status --db URL [--schema S] [--table-prefix P]`") == (
        "outbox-status---db-url---schema-s---table-prefix-p"
    )
    assert slug("`memory://` URLs: private or shared") == "memory-urls-private-or-shared"
