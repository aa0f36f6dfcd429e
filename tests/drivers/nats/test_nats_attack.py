"""A receiver on JetStream attacked on the real server: records no emitter of ours writes
(written over a raw socket: header names and values that are not UTF-8, repeated names,
hundreds of headers, no key, garbage in our own headers, bodies that are not JSON) amid
ours, with single and batch handlers. Every record ends handled once or dead-lettered
(found on the dead-letter channel), ours keep their key's order, and the receiver goes on."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from nats_helpers import TEST_OPTIONS, nats_url

import hexa_event as he
from attack_helpers import (
    base_exceptions_round,
    driver_closed_under_receiver,
    emit,
    garbage_round,
    hanging_handler_round,
    read_again,
)
from hexa_event import envelope as env
from hexa_event.drivers.nats import NatsDriver
from hexa_event.drivers.nats.naming import channel_subject
from hexa_event.propagation import CORRELATION_ID, LOCALE, USER

pytestmark = pytest.mark.nats

Header = tuple[bytes, bytes]


@pytest.fixture
async def driver(nats_server: str) -> AsyncIterator[NatsDriver]:
    made = NatsDriver.from_url(nats_server, **TEST_OPTIONS)
    yield made
    await made.close()


class RawNats:
    """A bare NATS connection writing header blocks byte for byte (nats-py writes text)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, url: str) -> RawNats:
        host, port = url.removeprefix("nats://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        await reader.readline()  # INFO
        writer.write(b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\n')
        return cls(reader, writer)

    def publish(self, subject: str, headers: list[Header], body: bytes) -> None:
        block = b"NATS/1.0\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in headers) + b"\r\n"
        size = len(block) + len(body)
        self.writer.write(f"HPUB {subject} {len(block)} {size}\r\n".encode())
        self.writer.write(block + body + b"\r\n")

    async def flush(self) -> None:
        """Returns once the server processed everything written (its PONG)."""
        self.writer.write(b"PING\r\n")
        async with asyncio.timeout(30):
            while (line := await self.reader.readline()) != b"PONG\r\n":
                assert not line.startswith(b"-ERR"), line

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def _ours(n: int, key: str, garbage: dict[str, bytes] | None = None) -> list[Header]:
    """The headers our emitters write, with ``garbage`` values in place of some."""
    values: dict[str, bytes] = {
        CORRELATION_ID: b"corr",
        LOCALE: b"en",
        USER: b"",
        env.EVENT_ID: f"id-{n}-{uuid.uuid4().hex}".encode(),
        env.EVENT_TIME: str(int(time.time() * 1000)).encode(),
        env.CONTENT_TYPE: b"application/json",
        env.PAYLOAD_ENCODER: b"json",
        "HEXA_KEY": key.encode(),
    }
    values.update(garbage or {})
    return [(k.encode(), v) for k, v in values.items()]


def _b64(value: bytes) -> bytes:
    return base64.b64encode(value)


def _body(n: int) -> bytes:
    return json.dumps({"n": n}).encode()


@pytest.mark.parametrize("batch", [False, True], ids=["single", "batch"])
async def test_garbage_records_amid_ours_are_each_handled_once_or_dead_lettered(
    driver: NatsDriver, nats_server: str, batch: bool
) -> None:
    """Those the core can read are handled once with what they hold (a value or name that
    is not UTF-8 as nats-py replaces it, the last of a repeated name, no key as ``""``, a
    nonsense emit time replaced by the server's), the others dead-lettered as poison and
    found on the dead-letter channel; ours around them handled once, in their key's order;
    a record scheduled for the year 9999 is held, not handled; the receiver goes on."""
    tag = uuid.uuid4().hex[:10]
    channel, action = f"natk-{tag}", f"natk-{tag}"
    subject = channel_subject(TEST_OPTIONS["subject_prefix"], channel)
    numbers = iter(range(1000))
    readable: dict[int, str] = {}  # n -> what it is
    poison: dict[int, str] = {}
    records: list[tuple[list[Header], bytes]] = []

    def ours(count: int) -> None:
        for _ in range(count):
            n = next(numbers)
            readable[n] = "ours"
            records.append((_ours(n, f"k{n % 3}"), _body(n)))

    def odd(
        what: str, headers: list[Header], handled: bool = True, body: bytes | None = None
    ) -> None:
        n = next(numbers)
        (readable if handled else poison)[n] = what
        records.append((headers, _body(n) if body is None else body))

    root = env.ROOT_ACTION
    ours(10)
    odd("value not utf-8", [(b"x-bin", b"\xff\xfe"), (b"HEXA_KEY", b"o1")])
    odd("name not utf-8", [(b"x-\xff\xfe", b"v"), (b"HEXA_KEY", b"o2")])
    odd("repeated", [(b"x-rep", b"1"), (b"x-rep", b"2"), (b"HEXA_KEY", b"o3")])
    ours(5)
    odd("hundreds", [(f"x-{i}".encode(), str(i).encode()) for i in range(300)])
    odd("no key", [(b"x-ok", b"1")])
    odd("empty key", [(b"HEXA_KEY", b""), (b"x-ok", b"1")])
    odd("key not utf-8", [(b"HEXA_KEY", _b64(b"\xff-k")), (b"HEXA_B64", b"HEXA_KEY")])
    odd("b64 list of garbage", [(b"x-v", b"%%%"), (b"HEXA_B64", b"x-v,nothing,,HEXA_B64")])
    odd("no colon", [(b"x-ok", b"1"), (b"garbage line", b"")])
    ours(5)
    odd("time 400 digits", _ours(0, "o4", {env.EVENT_TIME: b"9" * 400}))
    odd("time NaN", _ours(0, "o5", {env.EVENT_TIME: b"NaN"}))
    odd("time -5", _ours(0, "o6", {env.EVENT_TIME: b"-5"}))
    odd("id raw not utf-8", _ours(0, "o7", {env.EVENT_ID: b"\xff\xfe"}))
    odd("attempt abc, other action", _ours(0, "o8", {env.ATTEMPT: b"abc"}))
    odd("deliver-at 1900", _ours(0, "o9", {env.DELIVER_AT: b"-2208988800000"}))
    odd("accepted-at garbage", _ours(0, "o10", {"HEXA_ACCEPTED_AT": b"-1" * 300}))
    ours(5)
    odd(
        "id not utf-8",
        _ours(0, "p1", {env.EVENT_ID: _b64(b"\xff"), "HEXA_B64": b"HEXA_EVENT_ID"}),
        False,
    )
    odd("attempt abc", _ours(0, "p2", {env.ATTEMPT: b"abc", root: action.encode()}), False)
    odd(
        "attempt 10**30",
        _ours(0, "p3", {env.ATTEMPT: str(10**30).encode(), root: action.encode()}),
        False,
    )
    odd("empty body", [(b"HEXA_KEY", b"p4")], False, body=b"")
    odd("not json", _ours(0, "p5"), False, body=b"{not json")
    odd("no headers, not json", [], False, body=b"\xff\x00")
    n_later = next(numbers)
    records.append((_ours(0, "later", {env.DELIVER_AT: b"253402300799000"}), _body(n_later)))
    ours(20)

    await driver.provision([channel])
    raw = await RawNats.connect(nats_url())
    try:
        for headers, body in records:
            raw.publish(subject, headers, body)
        await raw.flush()
    finally:
        await raw.close()

    seen, dead = await garbage_round(driver, channel, action, batch, readable, len(poison))
    assert n_later not in {m.payload["n"] for ms in seen.values() for m in ms}
    keys = sorted(d.record.key for d in dead)  # a keyless one's: its coordinates
    assert keys[0].startswith("HEXA_TEST-")
    assert keys[1:] == ["p1", "p2", "p3", "p4", "p5"]

    def one(what: str) -> he.Message[dict[str, int]]:
        return seen[what][0]

    assert one("value not utf-8").headers["x-bin"] == "\ufffd\ufffd".encode()
    assert one("repeated").headers["x-rep"] in (b"1", b"2")
    assert len([k for k in one("hundreds").headers if k.startswith("x-")]) == 300
    assert one("no key").key == one("empty key").key == ""
    assert one("key not utf-8").key == "\ufffd-k"
    assert one("b64 list of garbage").headers["x-v"] == b"%%%"
    now = time.time()
    for what in ("time 400 digits", "time NaN", "time -5", "accepted-at garbage"):
        stamp = one(what).timestamp
        assert stamp is not None, what  # the server's time stands in
        assert abs(stamp.timestamp() - now) < 600, (what, stamp)


@pytest.mark.parametrize("mode", ["async", "sync", "batch"])
async def test_a_handler_raising_base_exceptions_fails_its_records_alone(
    driver: NatsDriver, mode: str
) -> None:
    """SystemExit, KeyboardInterrupt, a BaseException of the handler's own, a CancelledError
    the handler raises itself and GeneratorExit are handler failures: the record (for a
    batch handler: its batch) is retried, every record is handled, the receiver goes on,
    health stays healthy and nothing is left unsettled."""
    tag = uuid.uuid4().hex[:10]
    channel, action = f"natb-{tag}", f"natb-{tag}"
    await base_exceptions_round(driver, channel, action, mode, emit, read_again)


@pytest.mark.parametrize("mode", ["async", "sync", "batch"])
async def test_a_hanging_handler_is_reported_and_close_gives_back_exactly_its_records(
    driver: NatsDriver, mode: str
) -> None:
    """A handler that hangs on one key: the others are handled, health says the action
    stalls, naming it, close returns in bounded time (the drain cut at drain_timeout) and
    the next receiver of the group gets exactly the records not handled, in order."""
    tag = uuid.uuid4().hex[:10]
    channel, action = f"nath-{tag}", f"nath-{tag}"
    await hanging_handler_round(driver, channel, action, mode, emit, read_again)


async def test_the_driver_closed_under_a_running_receiver(driver: NatsDriver) -> None:
    """The driver closed while handlers run, some of them handling their record after
    that: the receiver closes itself at once (no settlement can be written any more; it
    does not retry them until its close gives up), says why, and health is unhealthy."""
    tag = uuid.uuid4().hex[:10]
    channel, action = f"natc-{tag}", f"natc-{tag}"
    await emit(driver, channel, [(f"k{n % 3}", n) for n in range(20)])
    await driver_closed_under_receiver(driver, channel, action)
