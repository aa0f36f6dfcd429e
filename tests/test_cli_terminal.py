"""What a foreign producer wrote reaches the operator's terminal escaped: no escape
sequence (cursor moves, screen clears, OSC 52 clipboard writes), carriage return or
bidirectional override in a record's key, headers, context or body acts on it, in the text
output of ``tail``, ``dlq list``, ``dlq show``, ``request`` and ``doctor`` or in ``--json``."""

from __future__ import annotations

import json
import re
import sys
import uuid
from typing import Any

import pytest

import hexa_event as he
from cli_helpers import cli
from hexa_event.commands import doctor
from hexa_event.commands._common import print_json
from hexa_event.commands._records import describe
from hexa_event.commands.tail import render
from hexa_event.driver import Delivery, Finding, RawRecord
from hexa_event.testing import eventually

UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
"""What must not reach a terminal raw (newline and tab may)."""
CLEAR = "\x1b[2J\x1b[H"
CLIPBOARD = "\x1b]52;c;Y3VybCBldmlsLnNoIHwgc2g=\x07"  # OSC 52: set the clipboard
CSI_C1 = "\x9b31m"  # the one-character CSI of the C1 controls
REVERSED = "\u202etxt.exe"  # shown as "exe.txt"
HOSTILE = f"a{CLEAR}b\rc{CLIPBOARD}d{CSI_C1}e{REVERSED}\u2028f\x85g"


def _assert_safe(text: str) -> None:
    found = sorted({hex(ord(c)) for c in UNSAFE.findall(text)})
    assert not found, f"raw control characters {found} in:\n{text!r}"


def _hostile_record(channel: str, body: bytes) -> RawRecord:
    return RawRecord(
        channel,
        f"key{CLEAR}",
        {
            "_payload_encoder": b"json",
            "_ctx_correlation_id": HOSTILE.encode(),
            "_ctx_locale": CLIPBOARD.encode(),
            "HEXA_EVENT_ID": f"id{CSI_C1}".encode(),
        },
        body,
    )


async def test_tail_escapes_what_a_producer_wrote(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"memory://terminal-{uuid.uuid4().hex}"
    conn = he.connect(url)
    await conn.publish(
        [
            _hostile_record("orders", json.dumps({"note": HOSTILE}, ensure_ascii=False).encode()),
            _hostile_record("orders", HOSTILE.encode()),  # not JSON: shown as text
        ]
    )
    try:
        assert await cli("tail", url, "orders", "--from-beginning", "-n", "2") == 0
        out = capsys.readouterr().out
        _assert_safe(out)
        assert out.count("── orders") == 2
        assert "key\\x1b[2J\\x1b[H" in out
        assert "\\x1b]52;c;" in out  # shown, so the operator sees something is off
        assert "\\u202etxt.exe" in out

        assert await cli("tail", url, "orders", "--from-beginning", "-n", "2", "--json") == 0
        out = capsys.readouterr().out
        _assert_safe(out)
        events = [json.loads(line) for line in out.splitlines()]
        assert events[0]["body"] == {"note": HOSTILE}  # the same value, escaped as JSON
        assert events[1]["body"] == HOSTILE
        assert events[0]["context"]["correlation_id"] == HOSTILE
    finally:
        await conn.close()


async def test_dlq_list_and_show_escape_what_a_producer_wrote(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"memory://terminal-{uuid.uuid4().hex}"
    conn = he.connect(url)
    receiver = conn.receiver("svc")

    def fail(ctx: he.Context, msg: he.Message[Any]) -> None:
        raise RuntimeError(f"bad input {msg.payload['note']}")

    receiver.subscribe("orders", action="charge", retry=he.NO_RETRIES, handler=fail)
    async with receiver:
        await conn.emitter().emit(
            he.Event(
                "orders", f"k{CLEAR}", {"note": HOSTILE}, id="evt-1", headers={"x-note": HOSTILE}
            ),
            he.Context(correlation_id=HOSTILE, locale=CLIPBOARD),
        )
        info = receiver.subscriptions["charge"]
        await eventually(lambda: info.counters.dead_lettered == 1, within=20, what="dead letter")
    try:
        args = ("--action", "charge", "--idle", "2")
        assert await cli("dlq", "list", url, *args) == 0
        out = capsys.readouterr().out
        _assert_safe(out)
        assert "k\\x1b[2J" in out

        assert await cli("dlq", "show", url, *args, "--id", "evt-1") == 0
        out = capsys.readouterr().out
        _assert_safe(out)
        assert "bad input a\\x1b[2J" in out  # the error message
        assert "x-note = a\\x1b[2J" in out  # a header
        assert "\\u202etxt.exe" in out  # the body

        assert await cli("dlq", "show", url, *args, "--id", "evt-1", "--json") == 0
        out = capsys.readouterr().out
        _assert_safe(out)
        assert json.loads(out)["body"] == {"note": HOSTILE}
    finally:
        await conn.close()


async def test_request_escapes_a_raw_reply_on_a_terminal_only(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"memory://terminal-{uuid.uuid4().hex}"
    conn = he.connect(url)
    replier = conn.emitter(codec="raw")
    receiver = conn.receiver("svc")

    @receiver.subscribe("echo", action="echo")
    async def echo(ctx: he.Context, msg: he.Message[Any]) -> None:
        await replier.reply(ctx, msg, HOSTILE.encode())

    args = ("request", url, "echo", "--key", "k", "--data", "{}")
    async with receiver:
        assert await cli(*args, "--json") == 0
        out = capsys.readouterr().out
        _assert_safe(out)
        assert json.loads(out)["payload"] == HOSTILE

        monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
        assert await cli(*args) == 0
        out = capsys.readouterr().out
        _assert_safe(out)
        assert "a\\x1b[2J" in out

        monkeypatch.setattr(sys.stdout, "isatty", lambda: False)  # a pipe: the bytes as sent
        assert await cli(*args) == 0
        assert capsys.readouterr().out == HOSTILE
    await conn.close()


def test_doctor_escapes_what_the_broker_said() -> None:
    report = doctor.Report(url="kafka://127.0.0.1:9092", engine="kafka")
    report.checks.append(Finding(f"topic {CLEAR}", "fail", HOSTILE, f"fix {CLIPBOARD}", ""))
    text = doctor.render(report)
    _assert_safe(text)
    assert "topic \\x1b[2J" in text


def test_tail_shows_a_key_that_is_not_utf8(capsys: pytest.CaptureFixture[str]) -> None:
    """Kafka hands a key that is not UTF-8 over with its bytes as lone surrogates
    (``surrogateescape``): writing it to a UTF-8 stdout raised UnicodeEncodeError and the
    tail died on that record (text and ``--json``). Its bytes are shown as ``\\xff``."""
    record = RawRecord("orders", "k\udcff\udcfe", {"HEXA_EVENT_ID": b"e-1"}, b'{"n": 1}')
    event = describe(Delivery(record, coordinates="orders-0-1", timestamp=None))
    sys.stdout.write(render(event))
    assert "key=k\\xff\\xfe  id=e-1" in capsys.readouterr().out
    print_json(event)
    assert json.loads(capsys.readouterr().out)["key"] == "k\udcff\udcfe"  # escaped in JSON
