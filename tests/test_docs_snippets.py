"""Every ```python block of README.md and docs/**/*.md runs as written.

The convention (CONTRIBUTING.md): a block runs on memory/SQLite with nothing else; the line
right before the fence may say ``<!-- needs: ENGINE -->`` (kafka, pulsar, nats, stan,
postgres: the block gets that pytest marker and runs where the service is, against the
default loopback URLs of ``scripts/services``) or ``<!-- no-run -->`` (a deliberate
fragment: skipped, and listed as such). Each block runs in a subprocess with a timeout in a
temporary directory; a block that defines ``test_*`` functions runs under pytest with
``asyncio_mode = auto``, as docs/testing-handlers.md tells readers to.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from hexa_event_services import require_service

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ("kafka", "pulsar", "nats", "stan", "postgres")
TIMEOUT = 120.0

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
_NEEDS = re.compile(r"^<!--\s*needs:\s*([a-z]+)\s*-->$")
_NO_RUN = re.compile(r"^<!--\s*no-run\s*-->$")
_TESTS = re.compile(r"^(async\s+)?def\s+test_", re.M)


@dataclass(frozen=True)
class Snippet:
    path: Path
    line: int
    code: str
    needs: str | None
    run: bool

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def snippets(path: Path) -> list[Snippet]:
    text = path.read_text()
    found = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        needs = _NEEDS.match(before)
        if needs and needs.group(1) not in ENGINES:
            raise AssertionError(
                f"{path.relative_to(ROOT)}:{line}: unknown engine {needs.group(1)!r} in "
                f"<!-- needs: -->; use one of {', '.join(ENGINES)}"
            )
        found.append(
            Snippet(
                path,
                line,
                match.group(1),
                needs.group(1) if needs else None,
                run=not _NO_RUN.match(before),
            )
        )
    return found


def _params() -> list[object]:
    params: list[object] = []
    for path in documents():
        for snippet in snippets(path):
            marks: list[pytest.MarkDecorator] = []
            if snippet.needs:
                marks.append(getattr(pytest.mark, snippet.needs))
            if not snippet.run:
                marks.append(pytest.mark.skip(reason="<!-- no-run -->: a deliberate fragment"))
            params.append(pytest.param(snippet, marks=marks, id=snippet.name))
    return params


def _env() -> dict[str, str]:
    """The services' loopback URLs (``scripts/services env``), as the snippets' defaults."""
    env = dict(os.environ)
    env.pop("HEXA_EVENT_URL", None)
    env.pop("HEXA_EVENT_DB", None)
    return env


@pytest.mark.parametrize("snippet", _params())
def test_snippet_runs(snippet: Snippet, tmp_path: Path) -> None:
    if snippet.needs:
        require_service(snippet.needs)
    if _TESTS.search(snippet.code):
        script = tmp_path / "test_snippet.py"
        (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n")
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", script.name]
    else:
        script = tmp_path / "snippet.py"
        argv = [sys.executable, script.name]
    script.write_text(snippet.code)
    try:
        done = subprocess.run(
            argv,
            cwd=tmp_path,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{snippet.name} did not finish within {TIMEOUT:.0f}s")
    assert done.returncode == 0, (
        f"{snippet.name} failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n"
        f"{done.stderr[-3000:]}"
    )


def test_the_convention_is_parsed(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "text\n```python\nprint(1)\n```\n\n<!-- needs: kafka -->\n```python\nprint(2)\n```\n"
        "<!-- no-run -->\n```python\nfragment(\n```\n```bash\nls\n```\n"
    )
    found = [(s.line, s.code, s.needs, s.run) for s in snippets(doc)]
    assert found == [
        (2, "print(1)\n", None, True),
        (7, "print(2)\n", "kafka", True),
        (11, "fragment(\n", None, False),
    ]


def test_every_document_has_been_looked_at() -> None:
    assert any(snippets(path) for path in documents()), "no python snippets found at all"
