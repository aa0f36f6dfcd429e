"""The operator commands against hostile input: records whose bodies or broker times are
garbage, a broker that fails mid-read, absurd numbers on the command line, Ctrl-C at a
prompt. None of it may end a ``tail``, leave a driver open, read as "nothing there" or hang."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import hexa_event as he
from cli_helpers import cli
from hexa_event.cli import build_parser, main
from hexa_event.commands._records import describe
from hexa_event.driver import Delivery, RawRecord, Subscription, SubscriptionSpec
from hexa_event.testing import eventually


def _strict(text: str) -> Any:
    """``json.loads`` that refuses NaN and infinities, as ``jq`` and every other reader do."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


async def test_tail_prints_garbage_json_bodies_as_text_and_keeps_following(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A foreign record claiming JSON but nested past recursion, or holding NaN or a number
    beyond a float: the tail shows it as text and goes on to the next record; ``--json``
    stays valid JSON (it printed ``NaN``/``Infinity``, or died with RecursionError). A
    ``_ctx_user`` nested past recursion is shown as a context error (RecursionError too)."""
    url = f"memory://hostile-{uuid.uuid4().hex}"
    conn = he.connect(url)
    json_header = {"_payload_encoder": b"json"}
    bodies = [b"[" * 100_000, b"[" * 5000 + b"]" * 5000, b'{"x": NaN}', b"[1e400]", b'{"ok": 1}']
    deep_user = {**json_header, "_ctx_user": b'{"_user_identifier": ' + b"[" * 100_000 + b"}"}
    await conn.publish(
        [RawRecord("garbage", "k", dict(json_header), body) for body in bodies]  # in order
        + [RawRecord("garbage", "k", deep_user, b'{"ok": 2}')]
    )
    try:
        code = await cli("tail", url, "garbage", "--from-beginning", "-n", "6", "--json")
        assert code == 0
        lines = capsys.readouterr().out.splitlines()
        events = [_strict(line) for line in lines]
        assert [e["decoded_as"] for e in events] == ["text"] * 4 + ["json"] * 2
        assert events[2]["body"] == '{"x": NaN}'
        assert events[4]["body"] == {"ok": 1}
        assert "_ctx_user" in events[5]["context"]["error"]  # a user nested past recursion

        assert await cli("tail", url, "garbage", "--from-beginning", "-n", "6") == 0
        out = capsys.readouterr().out
        assert out.count("── garbage") == 6
        assert '"ok": 1' in out
        assert "context error:" in out
    finally:
        await conn.close()


def test_a_record_with_an_absurd_broker_time_is_described() -> None:
    """Kafka's record time is the producer's (CreateTime): any int64 of milliseconds. Without
    HEXA_EVENT_TIME the tail fell back on it and raised ValueError (year out of range)."""
    record = RawRecord("orders", "k", {}, b'{"n": 1}')
    for timestamp in (9.2e15, -9.2e15, float("nan"), float("inf")):
        event = describe(Delivery(record, coordinates="orders-0-1", timestamp=timestamp))
        assert event["time"] == ""
        assert event["body"] == {"n": 1}


class _FailingFetch:
    """A subscription whose fetch fails (the broker went away mid-read)."""

    def __init__(self, inner: Subscription) -> None:
        self.inner = inner
        self.closed = False

    async def fetch(self, max_count: int) -> Sequence[Delivery]:
        raise ConnectionError("broker went away")

    def caught_up(self) -> bool:
        return False

    async def close(self) -> None:
        self.closed = True
        await self.inner.close()


class _Flaky(he.Connection):
    def __init__(self, driver: Any) -> None:
        super().__init__(driver)
        self.closed = False
        self.subscriptions: list[_FailingFetch] = []

    async def subscribe(self, spec: SubscriptionSpec) -> Subscription:
        sub = _FailingFetch(await super().subscribe(spec))
        self.subscriptions.append(sub)
        return sub  # type: ignore[return-value]

    async def close(self) -> None:
        self.closed = True
        await super().close()


async def test_dlq_closes_its_subscription_and_driver_when_reading_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``dlq list`` whose fetch raised left the subscription and the driver open: the
    reading ran after the guarded opening, outside ``__aexit__``'s reach."""
    made: list[_Flaky] = []

    def factory(url: str, **options: Any) -> _Flaky:
        made.append(_Flaky(he.connect(f"memory://flaky-{uuid.uuid4().hex}").driver))
        return made[-1]

    monkeypatch.setattr(importlib.import_module("hexa_event.connect"), "_REGISTERED", {})
    he.register_driver("flakyfetch", factory)
    with pytest.raises(ConnectionError):
        await cli("dlq", "list", "flakyfetch://x", "--action", "billing")
    assert made
    assert made[0].subscriptions
    assert made[0].subscriptions[0].closed
    assert made[0].closed


@pytest.mark.parametrize(
    "argv",
    [
        ["dlq", "list", "memory://", "--action", "a", "--limit", "0"],
        ["dlq", "list", "memory://", "--action", "a", "--limit", "-3"],
        ["dlq", "list", "memory://", "--action", "a", "--idle", "0"],
        ["dlq", "purge", "memory://", "--action", "a", "--idle", "nan"],
        ["dlq", "replay", "memory://", "--action", "a", "--idle", "-1"],
        ["tail", "memory://", "orders", "-n", "0"],
        ["tail", "memory://", "orders", "--idle", "nan"],
        ["tail", "memory://", "orders", "--idle", "inf"],
        ["outbox", "status", "--db", "sqlite:///x.db", "--window", "0"],
        ["outbox", "status", "--db", "sqlite:///x.db", "--window", "nan"],
        ["outbox", "status", "--db", "sqlite:///x.db", "--window", "1e300"],
        ["doctor", "memory://", "--timeout", "nan"],
        ["doctor", "memory://", "--retries", "1" + "0" * 400],
        ["outbox", "clean", "--db", "sqlite:///x.db", "--retention", "9" * 400 + "d"],
        ["outbox", "relay", "--db", "sqlite:///x.db", "--lease", "99999999999d"],
        ["outbox", "clean", "--db", "sqlite:///x.db", "--retention", "1000000d"],  # year < 1
        ["outbox", "relay", "--db", "sqlite:///x.db", "--retry-delay", "9" * 30],
        ["outbox", "clean", "--db", "sqlite:///x.db", "--every", "0"],  # cleaned every 60 s
        ["inbox", "clean", "--db", "sqlite:///x.db", "--every", "0ms"],
        ["outbox", "relay", "--db", "sqlite:///x.db", "--lease", "0"],  # exit 1, not 2
        ["outbox", "relay", "--db", "sqlite:///x.db", "--poll-interval", "0s"],
    ],
)
def test_absurd_numbers_are_bad_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """0, negative, NaN, infinite or 400-digit values: exit status 2 naming the option,
    not "no pending dead letters" (``--limit 0``, ``--idle 0``), a wait that never ends
    (``--idle nan``), "cannot read the outbox: division by zero" or an OverflowError
    traceback out of argparse."""
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "expected" in err or "too long" in err


async def _one_dead_letter(url: str, action: str) -> None:
    conn = he.connect(url)
    receiver = conn.receiver("svc")
    receiver.subscribe(
        "orders",
        action=action,
        retry=he.NO_RETRIES,
        handler=lambda c, m: (_ for _ in ()).throw(RuntimeError("down")),
    )
    async with receiver:
        await conn.emitter().emit(he.Event("orders", "k", {"n": 1}))
        info = receiver.subscriptions[action]
        await eventually(lambda: info.counters.dead_lettered == 1, within=20, what="dead letter")
    await conn.close()


def test_ctrl_c_at_the_purge_confirmation_exits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C at ``purge N dead letters? [y/N]`` left ``asyncio.run`` waiting for the
    executor thread blocked in ``input()``: the command hung until Enter was pressed."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    asyncio.run(_one_dead_letter(url, "export"))
    controller, terminal = os.openpty()  # a terminal, so that purge asks (on stderr)
    command = [sys.executable, "-m", "hexa_event.cli", "dlq", "purge", url, "--action", "export"]
    proc = subprocess.Popen(command, stdin=terminal, stdout=terminal, stderr=terminal)
    os.close(terminal)
    try:
        seen = b""
        deadline = time.monotonic() + 60
        while b"[y/N]" not in seen:
            assert proc.poll() is None, seen
            assert time.monotonic() < deadline, seen
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                seen += os.read(controller, 4096)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(controller)
    capsys.readouterr()
    assert main(["dlq", "list", url, "--action", "export", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1  # nothing was purged


def test_decode_body_never_raises() -> None:
    """Its promise; a deep body raised RecursionError (``json.loads`` raises that, not
    ValueError), and a ``--type`` that is not a class AttributeError."""
    from hexa_event.commands._records import decode_body

    deep = b"[" * 100_000
    assert decode_body("json", deep) == (deep.decode(), "text")
    assert decode_body("protobuf", b'{"a": NaN}') == ('{"a": NaN}', "text")
    body, how = decode_body("protobuf", b"{}", "not a class")
    assert (body, how.split(":")[0]) == ("{}", "undecodable as 'not a class'")


def test_doctor_names_a_port_past_65535(capsys: pytest.CaptureFixture[str]) -> None:
    """The TCP check let OverflowError (not an OSError) out: doctor died with a traceback's
    last line and exit status 1 instead of naming the port (exit status 5)."""
    assert main(["doctor", "kafka://127.0.0.1:99999", "--timeout", "2"]) == 5
    out = capsys.readouterr().out
    assert "[FAIL] reach 127.0.0.1:99999" in out
    assert "1 to 65535" in out


@pytest.mark.parametrize(
    "option",
    [
        "--correlation-id",
        "--locale",
        "--user-id",
        "--service-user",
        "--id",
        "--reply-channel",
    ],  # --traceparent: refused as it is parsed, not W3C (test_cli_review.py)
)
def test_publish_names_an_option_that_is_not_utf8(
    option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bytes that are not UTF-8 in an argument reach Python as lone surrogates (PEP 383);
    the context options went into headers unchecked: ``UnicodeEncodeError`` (exit 1)
    instead of bad usage naming the option."""
    argv = ["publish", "memory://", "orders", "--key", "k", "--data", "{}", option, "a\udcff"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"error: {option} 'a\\udcff' is not UTF-8 text" in err
    assert "UnicodeEncodeError" not in err


async def test_publish_raw_data_that_is_not_utf8_is_sent_as_given(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--codec raw --data`` with bytes that are not UTF-8 raised UnicodeEncodeError; they
    are the bytes the operator gave, so they are published as they are."""
    url = f"memory://raw-{uuid.uuid4().hex}"
    conn = he.connect(url)
    try:
        argv = ("publish", url, "raw", "--key", "k", "--codec", "raw", "--data", "\udcff\udcfe")
        assert await cli(*argv) == 0
        assert await cli("tail", url, "raw", "--from-beginning", "-n", "1", "--json") == 0
        out = capsys.readouterr().out.splitlines()[-1]
        assert json.loads(out)["body"] == "//4="  # base64 of b"\xff\xfe"
    finally:
        await conn.close()


@pytest.mark.parametrize("level", ["debug", " Warning ", "verbose", ""])
def test_a_log_level_from_the_environment_is_checked(
    level: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """argparse checks no default against the choices: ``HEXA_EVENT_LOG_LEVEL=debug`` (or
    any typo) reached ``logging.basicConfig`` and every command died with a ValueError
    traceback. Any case is accepted now; anything else is bad usage naming the variable."""
    monkeypatch.setenv("HEXA_EVENT_LOG_LEVEL", level)
    if level.strip().lower() in ("debug", "warning", ""):
        assert main(["outbox", "ddl"]) == 0
        expected = level.strip().upper() or "INFO"  # set but empty: as if unset
        assert build_parser().parse_args(["outbox", "ddl"]).log_level == expected
        return
    with pytest.raises(SystemExit) as stopped:
        main(["outbox", "ddl"])
    assert stopped.value.code == 2
    assert "$HEXA_EVENT_LOG_LEVEL" in capsys.readouterr().err


def test_doctor_reaches_an_ipv6_address(capsys: pytest.CaptureFixture[str]) -> None:
    """``[::1]:4222`` was split at its last colon into the host ``[::1]``, which no resolver
    knows: doctor said a listening broker was unreachable (exit 3); ``[::1]`` without a port
    became the host ``[:``."""
    from hexa_event.commands.doctor import _hosts

    assert _hosts("nats://[::1]:4333,[fe80::1],h:1", 4222) == [
        ("::1", 4333),
        ("fe80::1", 4222),
        ("h", 1),
    ]
    try:
        listener = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with listener:
        port = listener.getsockname()[1]
        main(["doctor", f"nats://[::1]:{port}", "--timeout", "2"])  # not NATS: fails later
    out = capsys.readouterr().out
    assert f"[ok  ] reach [::1]:{port}: TCP connection opened" in out


def test_tail_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    """``hexa-event tail URL orders | head -1``: once ``head`` exits, the next write fails.
    It printed ``hexa-event: error: BrokenPipeError`` and exited 1 (failed); it now stops
    quietly with 141, as ``cat`` killed by SIGPIPE does."""
    url = f"sqlite:///{tmp_path / 'log.db'}"

    async def publish() -> None:
        conn = he.connect(url)
        await conn.emitter().emit(he.Event("orders", "k", {"n": 1}))
        await conn.close()

    asyncio.run(publish())
    command = [sys.executable, "-m", "hexa_event.cli", "tail", url, "orders"]
    proc = subprocess.Popen(
        [*command, "--from-beginning", "--idle", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before the first event is printed
    _, err = proc.communicate(timeout=60)
    assert b"Error" not in err, err
    assert proc.returncode == 141


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--header", "HEXA_EVENT_ID=forged"], "--header"),  # found while encoding: exit 1
        (["--header", "_ctx_user=forged"], "--header"),
        (["--id", ""], "--id"),  # was named "id"
    ],
)
@pytest.mark.parametrize("command", ["publish", "request"])
def test_publish_names_the_option_of_a_bad_event(
    command: str, argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = [command, "memory://", "orders", "--key", "k", "--data", "{}"]
    assert main([*base, *argv]) == 2
    assert capsys.readouterr().err.startswith(f"hexa-event: error: {option}: invalid event")


def test_publish_takes_one_user(capsys: pytest.CaptureFixture[str]) -> None:
    """``--user-id a --service-user b`` published as user ``a``, dropping ``b`` unsaid."""
    argv = ["publish", "memory://", "o", "--key", "k", "--data", "{}", "--user-id", "a"]
    with pytest.raises(SystemExit) as stopped:
        main([*argv, "--service-user", "b"])
    assert stopped.value.code == 2
    assert "not allowed with argument --user-id" in capsys.readouterr().err


def test_doctor_names_a_url_it_cannot_read(capsys: pytest.CaptureFixture[str]) -> None:
    """``kafka://[::1`` (a bracket missing): doctor, whose job is to say what is wrong with
    a URL, died with ``error: ValueError: Invalid IPv6 URL`` (exit 1)."""
    assert main(["doctor", "kafka://user:s3cret@[::1:9092", "--timeout", "1"]) == 5
    out = capsys.readouterr().out
    assert "[FAIL] URL: the URL cannot be read: Invalid IPv6 URL" in out
    assert "in brackets" in out
    assert "s3cret" not in out


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deep"),  # RecursionError, exit 1
        ('{"total": NaN}', "NaN is not JSON"),  # EncodeError at emit, exit 1
        ("[1e400]", "beyond a float"),
    ],
)
def test_publish_data_json_cannot_carry_is_bad_usage(
    data: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["publish", "memory://", "orders", "--key", "k", "--data", data]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hexa-event: error: --data ")
    assert says in err


@pytest.mark.parametrize("command", [["tail"], ["dlq", "list"], ["publish"]])
def test_a_bad_url_option_is_bad_usage(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo in a URL option (``table_prefx``) is the user's to fix: exit 2, as argparse's
    usage errors, naming the known options (it was exit 1, like a broker failure)."""
    url = f"sqlite:///{tmp_path / 'log.db'}?table_prefx=a_"
    rest = {
        "tail": ["orders"],
        "dlq": ["--action", "a"],
        "publish": ["orders", "--key", "k", "--data", "1"],
    }
    assert main([*command, url, *rest[command[0]]]) == 2
    err = capsys.readouterr().err
    assert "table_prefx" in err
    assert "table_prefix" in err
