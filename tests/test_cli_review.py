"""Leftovers of the first CLI review: bounds on ``run``'s counts, ``request --timeout`` and
``publish --traceparent`` checked as they are parsed, a ConfigurationError that is not
about ``--timeout`` reported as what it is, and error lines from a broker's text escaped."""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Sequence
from typing import Any

import pytest

import hexa_event as he
from cli_helpers import cli
from hexa_event.cli import build_parser, main
from hexa_event.driver import Delivery, RawRecord, Subscription, SubscriptionSpec
from hexa_event.errors import ConfigurationError, DriverError

_HOSTILE = "broker says \x1b]52;c;cm0gLXJmIH4=\x07\x1b[2J\u202eok"
"""Text a broker (or whatever answers on its port) could send: OSC 52 sets the clipboard,
ESC[2J clears the screen, U+202E shows the rest reversed."""


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["run", "svc:build", "--max-restarts", "-3"], "--max-restarts"),
        (["run", "svc:build", "--max-restarts", "9" * 400], "--max-restarts"),
        (["run", "svc:build", "--workers", "1025"], "--workers"),
        (["run", "svc:build", "--workers", str(2**53)], "--workers"),
        (["request", "memory://", "c", "--key", "k", "--data", "{}", "--timeout", "nan"], None),
        (["request", "memory://", "c", "--key", "k", "--data", "{}", "--timeout", "0"], None),
        (["request", "memory://", "c", "--key", "k", "--data", "{}", "--timeout", "86401"], None),
        (["publish", "memory://", "c", "--key", "k", "--data", "{}", "--traceparent", "x"], None),
        (
            [
                *("publish", "memory://", "c", "--key", "k", "--data", "{}", "--traceparent"),
                "00-" + "0" * 32 + "-00f067aa0ba902b7-01",  # an all-zero trace id
            ],
            "--traceparent",
        ),
        (
            [
                *("request", "memory://", "c", "--key", "k", "--data", "{}", "--traceparent"),
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # version ff
            ],
            "--traceparent",
        ),
    ],
)
def test_bad_counts_timeouts_and_traceparents_are_bad_usage(
    argv: list[str], option: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    """``run --max-restarts -3`` behaved as 0, ``--workers`` took up to 2**53 processes, a
    bad ``request --timeout`` was found only once connected, and a traceparent that is not
    W3C was sent, and every consumer dropped it silently (the trace did not continue)."""
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option or argv[-2]}: expected" in err


def test_a_w3c_traceparent_is_taken_in_lower_case() -> None:
    given = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"
    args = build_parser().parse_args(
        ["publish", "memory://", "c", "--key", "k", "--data", "{}", "--traceparent", given]
    )
    assert args.traceparent == given.lower()


def _refusing(how: str) -> he.Connection:
    """A memory connection whose driver refuses an option at subscribe (found only then),
    fails its publish with a broker's hostile text, or whose reply fetch fails so."""
    conn = he.connect(f"memory://refuse-{uuid.uuid4().hex}")
    driver: Any = conn.driver
    subscribe = driver.subscribe

    async def refused_subscribe(spec: SubscriptionSpec) -> Subscription:
        if how == "subscribe":
            raise ConfigurationError("the driver option ?prefetch_bytes=3 is below 1024")
        return _FailingFetch(await subscribe(spec))  # type: ignore[return-value]

    async def refused_publish(records: Sequence[RawRecord]) -> None:
        raise DriverError(_HOSTILE)

    if how == "publish":
        driver.publish = refused_publish
    else:
        driver.subscribe = refused_subscribe
    return conn


class _FailingFetch:
    def __init__(self, inner: Subscription) -> None:
        self.inner = inner

    async def fetch(self, max_count: int) -> Sequence[Delivery]:
        raise ConnectionError(_HOSTILE)

    async def settle(self, deliveries: Sequence[Delivery]) -> None:
        await self.inner.settle(deliveries)

    async def close(self) -> None:
        await self.inner.close()


@pytest.fixture
def refusing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.import_module("hexa_event.connect"), "_REGISTERED", {})
    for how in ("subscribe", "publish", "fetch"):
        he.register_driver(f"refuse{how}", lambda url, how=how, **options: _refusing(how))


@pytest.mark.usefixtures("refusing")
def test_request_reports_a_driver_option_refused_as_it_is(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A ConfigurationError of the driver's (an option found bad at the first subscribe)
    was reported as ``--timeout: ...``: the operator changed the timeout, in vain."""
    code = main(["request", "refusesubscribe://x", "c", "--key", "k", "--data", "{}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--timeout" not in err
    assert "hexa-event: error: the driver option ?prefetch_bytes=3 is below 1024" in err


@pytest.mark.usefixtures("refusing")
def test_an_error_line_with_a_brokers_escapes_is_shown_not_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``hexa-event: error: ...`` printed a broker's text as it came: its escapes set the
    operator's clipboard, cleared the screen, reversed the line."""
    code = main(["publish", "refusepublish://x", "c", "--key", "k", "--data", "{}"])
    err = capsys.readouterr().err
    assert code == 1
    line = next(line for line in err.splitlines() if line.startswith("hexa-event: error:"))
    assert "broker says \\x1b]52;c;cm0gLXJmIH4=\\x07\\x1b[2J\\u202eok" in line
    assert not {"\x1b", "\x07", "\u202e"} & set(err)


@pytest.mark.usefixtures("refusing")
async def test_a_request_timeout_naming_a_brokers_error_is_escaped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The timeout's message names why the reply channel could not be read, in the broker's
    words: printed as a CommandError, unescaped."""
    code = await cli(
        "request", "refusefetch://x", "c", "--key", "k", "--data", "{}", "--timeout", "0.5"
    )
    err = capsys.readouterr().err
    assert code == 1
    line = next(line for line in err.splitlines() if line.startswith("hexa-event: error:"))
    assert "reading the reply channel fails" in line
    assert "\\x1b]52;c;" in line
    assert not {"\x1b", "\x07", "\u202e"} & set(line)
