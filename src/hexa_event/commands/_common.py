"""What the operator commands share: exit codes, output, URLs without secrets."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO
from urllib.parse import urlsplit

from ..numbers import whole_number

OK = 0
FAILED = 1
USAGE = 2
UNREACHABLE = 3
"""The broker or database could not be reached (or refused the credentials)."""
NOT_FOUND = 4
"""What was asked for (a dead letter, a channel) does not exist."""
PROBLEMS = 5
"""``doctor`` found something to fix."""
DECLINED = 6
"""The operator answered no to a confirmation."""

EXIT_CODES = {
    OK: "done",
    FAILED: "failed",
    USAGE: "bad usage",
    UNREACHABLE: "unreachable or refused",
    NOT_FOUND: "not found",
    PROBLEMS: "problems found",
    DECLINED: "declined",
}


class CommandError(Exception):
    """A failure with the exit code to return and a message that names the fix."""

    def __init__(self, message: str, code: int = FAILED) -> None:
        super().__init__(message)
        self.code = code


_BROKER_SCHEMES = frozenset({"kafka", "pulsar", "nats", "stan", "memory"})


def database_url_problem(url: str, option: str = "--db") -> str | None:
    """Why ``url`` cannot be the database of ``option`` (a broker's URL given where the
    outbox's or inbox's SQL database belongs), or None: the message names the fix."""
    scheme = urlsplit(url).scheme.lower()
    if scheme.split("+")[0] not in _BROKER_SCHEMES:  # kafka+ssl, stan+tls...
        return None
    return (
        f"{option} takes the SQL database that holds the table (postgresql://user@host/db, "
        f"sqlite:///app.db), not a {scheme}:// broker URL; the broker of `outbox relay` "
        "goes in --to"
    )


def url_argument(parser: argparse.ArgumentParser) -> None:
    """A positional driver URL, falling back to ``$HEXA_EVENT_URL`` (keeps passwords out of
    the process list); ``--url`` is accepted too."""
    parser.add_argument(
        "url",
        nargs="?",
        metavar="URL",
        help="driver URL, e.g. kafka://127.0.0.1:9092, sqlite:///events.db (default: "
        "$HEXA_EVENT_URL)",
    )
    parser.add_argument("--url", dest="url_option", metavar="URL", help=argparse.SUPPRESS)


def require_url(args: argparse.Namespace) -> str:
    url = args.url or getattr(args, "url_option", None) or os.environ.get("HEXA_EVENT_URL")
    if not url:
        raise CommandError(
            "give the driver URL (e.g. kafka://127.0.0.1:9092) or set HEXA_EVENT_URL", USAGE
        )
    return str(url)


def require_existing_sqlite(url: str) -> None:
    """For a read-only command: refuse (NOT_FOUND) a SQLite URL whose file does not exist,
    rather than let the driver create an empty database there (a typo would otherwise
    read as "nothing pending"). Other URLs pass."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return
    if not parts.scheme.lower().startswith("sqlite") or parts.netloc:
        return  # not SQLite; or sqlite://host/..., which connect() refuses with the fix
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path or path == ":memory:" or "mode=memory" in parts.query:
        return
    if not os.path.exists(path):
        raise CommandError(
            f"no SQLite database at {os.path.abspath(path)}: this command only reads and does "
            "not create one. Check the path: sqlite:///relative/app.db is relative to the "
            "current directory, sqlite:////absolute/app.db is absolute",
            NOT_FOUND,
        )


LONGEST = 10**9
"""The most seconds an option takes (31 years): ``timedelta`` and the event loop's timers
overflow somewhere past it."""


def count(text: str) -> int:
    """An argparse type: a whole number from 1 (``--limit``, ``-n``). 0, a negative number or
    one of 400 digits is bad usage, not "nothing there"."""
    value = whole_number(text, 1)
    if value is None:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1, got {text!r}")
    return value


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds above 0 (``--idle``, ``--timeout``,
    ``--window``); NaN, infinities, 0 and negative ones are bad usage."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= LONGEST:  # False for NaN
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds above 0 and at most {LONGEST:g}, e.g. 5 or 0.5, "
            f"got {text!r}"
        )
    return value


_HIDDEN = "\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff"
"""What a terminal acts on or hides besides the C0 controls: DEL, the C1 controls (U+009B
is a CSI on some terminals), the bidirectional marks and overrides (text shown reversed),
the Unicode line and paragraph separators; and lone surrogates, which a UTF-8 stdout
refuses (Kafka hands a key that is not UTF-8 over with its bytes as U+DC80-U+DCFF)."""
_UNSAFE_LINE = re.compile(f"[\x00-\x1f{_HIDDEN}]")
_UNSAFE_LINES = re.compile(f"[\x00-\x08\x0b-\x1f{_HIDDEN}]")
_UNSAFE_JSON = re.compile(f"[{_HIDDEN}]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        code -= 0xDC00
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, lines: bool = False) -> str:
    """``text`` safe to print on a terminal: control characters (ESC, CR, BEL, the C1
    controls), bidirectional overrides and line separators shown as escapes (``\\x1b``,
    ``\\u202e``), as ``less`` shows them, so that what a foreign producer wrote cannot move
    the cursor, rewrite a line, set the clipboard (OSC 52) or reverse text. Newlines and
    tabs are kept when ``lines`` (a body printed over several lines), escaped otherwise."""
    return (_UNSAFE_LINES if lines else _UNSAFE_LINE).sub(_escape, text)


def safe_json(text: str) -> str:
    """JSON text with what :func:`printable` escapes and ``json.dumps`` keeps (DEL, the C1
    controls, bidirectional marks, line separators) written as ``\\uXXXX`` escapes: the
    same JSON value, safe on a terminal (such characters only occur inside strings)."""
    return _UNSAFE_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable JSON output")


def print_json(value: Any, out: TextIO | None = None) -> None:
    text = json.dumps(value, default=str, ensure_ascii=False)
    (out or sys.stdout).write(safe_json(text) + "\n")


def text_of(headers: Mapping[str, bytes], name: str) -> str:
    raw = headers.get(name)
    return raw.decode("utf-8", "replace") if raw is not None else ""


def shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def table(rows: list[list[str]], headers: list[str]) -> str:
    """Plain aligned columns."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines) + "\n"


class Progress:
    """A one-line progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, total: int, label: str, out: TextIO | None = None) -> None:
        self.total = max(total, 1)
        self.label = label
        self.out = out or sys.stderr
        self.enabled = self.out.isatty()
        self.done = 0

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.enabled:
            filled = int(30 * self.done / self.total)
            self.out.write(
                f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total}"
            )
            self.out.flush()

    def finish(self) -> None:
        if self.enabled:
            self.out.write("\n")
            self.out.flush()
