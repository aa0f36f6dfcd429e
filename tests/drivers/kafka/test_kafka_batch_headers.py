"""What a batch handler's messages carry on Kafka, headers above all: a real receiver over
the Kafka subscription fed confluent-kafka messages in process (no broker), a batch
handler and a single-message handler reading the same records. Record batches hand the
client's header pairs to the core, which reads ours by position and gives the handler a
read-only mapping built when first read; every message must carry exactly what the
single-message path gives (of repeated names the last wins, a null value is ``b""``)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import confluent_kafka
import pytest
from kafka_stub_member import StubMember

import hexa_event as he
from hexa_event import envelope as env
from hexa_event.driver import (
    Driver,
    Features,
    PairHeaders,
    RawRecord,
    Subscription,
    SubscriptionSpec,
)
from hexa_event.drivers.kafka.consumer import KafkaSubscription
from hexa_event.drivers.kafka.offsets import PartitionState
from hexa_event.drivers.kafka.options import KafkaOptions
from hexa_event.propagation import CORRELATION_ID, LOCALE, USER

pytestmark = pytest.mark.kafka


class _Subscription(KafkaSubscription):
    """The driver's subscription, partition 0 of ``t`` held by a stand-in member."""

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.member = StubMember(strict=True)
        self._members = [self.member]  # type: ignore[list-item]
        self._commit_timer = loop.call_later(3600, print)  # no commits: no broker
        self._partitions[("t", 0)] = PartitionState(("t", 0), self.member, 0)  # type: ignore[arg-type]

    async def lag(self) -> None:
        return None

    async def close(self) -> None:
        self._closed = True
        self._buffer.close()
        if self._commit_timer is not None:
            self._commit_timer.cancel()


class _Driver(Driver):
    features = Features(name="kafka", persistent=True)

    def __init__(self) -> None:
        self.subscriptions: list[_Subscription] = []

    async def publish(self, records: Sequence[RawRecord]) -> None:
        raise AssertionError(f"nothing is published here, got {records!r}")

    async def subscribe(self, spec: SubscriptionSpec) -> Subscription:
        sub = _Subscription(KafkaOptions(bootstrap_servers="127.0.0.1:1"), spec, None)
        await sub.start()
        self.subscriptions.append(sub)
        return sub

    async def close(self) -> None:
        pass


class _Unreadable(confluent_kafka.Message):  # type: ignore[misc]
    """A record whose header name is not UTF-8: the client raises reading its headers."""

    def headers(self) -> Any:
        if getattr(self, "_read", False):
            return super().headers()
        self._read = True
        raise ValueError("header name is not UTF-8")


_GO_USER = (
    b'{"_user_type":"_regular","_user_identifier":"go-user","_user_email":"go-user@example.com",'
    b'"_user_phone":"","_user_name":"Go User","_user_username":"go-user",'
    b'"_user_is_active":true,"_user_roles":["admin"]}'
)
"""What hexa-event for Go writes as a user (tests/interop/go/main.go)."""


def _ours(n: int, user: he.User | None = None) -> list[tuple[str, bytes | None]]:
    """Our emitters' eight headers, in their order, for event ``n``."""
    envelope = env.Envelope()
    ctx = he.Context(correlation_id=f"c{n}", locale="fa-IR", user=user)
    record = envelope.seal(he.Event("t", f"k{n}", {"n": n}, id=f"id-{n}"), ctx)
    pairs: list[tuple[str, bytes | None]] = list(record.headers.items())
    assert [name for name, _ in pairs] == [
        CORRELATION_ID,
        LOCALE,
        USER,
        env.EVENT_ID,
        env.EVENT_TIME,
        env.CONTENT_TYPE,
        env.REPLY_CHANNEL,
        env.PAYLOAD_ENCODER,
    ]
    return pairs


def _replace(pairs: list[tuple[str, bytes | None]], name: str, value: bytes | None) -> Any:
    return [(n, value if n == name else v) for n, v in pairs]


def _records() -> list[tuple[str, Any]]:
    """(what it is, headers as the client lists them), each a record of its own key."""
    return [
        ("ours", _ours(0)),
        ("ours, a null locale", _replace(_ours(1), LOCALE, None)),
        ("ours, a null reply channel", _replace(_ours(2), env.REPLY_CHANNEL, None)),
        ("ours, a null event time", _replace(_ours(3), env.EVENT_TIME, None)),
        ("ours, a null event id", _replace(_ours(4), env.EVENT_ID, None)),
        ("ours, an empty event id", _replace(_ours(4), env.EVENT_ID, b"")),
        ("ours, in another order", list(reversed(_ours(5)))),
        ("ours, a name repeated", [*_ours(6), (CORRELATION_ID, b"later"), ("x-dup", None)]),
        (
            "ours, the id repeated in place",
            [*_ours(7)[:5], (env.EVENT_ID, b"id-7-again"), *_ours(7)[6:]],
        ),
        ("ours, a header of the event", [("x-app", b"1"), *_ours(8)]),
        (
            "ours, another user",
            _ours(9, he.User(id="u9", name="U 9")),
        ),
        (
            "Go-written",  # what hexa-event for Go (sarama) writes: no id, no content type
            [
                (CORRELATION_ID, b"go-corr-1"),
                (LOCALE, b"fa-IR"),
                (USER, _GO_USER),
                (env.REPLY_CHANNEL, b"go-replies"),
                (env.PAYLOAD_ENCODER, b"json"),
            ],
        ),
        ("foreign", [("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"), ("x", None)]),
        ("foreign, repeated", [("x", b"1"), ("y", b""), ("x", b"2")]),
        ("no headers", None),
        ("an empty list", []),
        ("a name that is not UTF-8", [("x-ok", b"1")]),
        ("ours, a key that is not UTF-8", _ours(16)),
    ]


def _key(offset: int, what: str) -> bytes:
    return b"k%d" % offset + (b"\xff" if "key that is not UTF-8" in what else b"")


def _messages(records: list[tuple[str, Any]]) -> list[confluent_kafka.Message]:
    out = []
    for offset, (what, headers) in enumerate(records):
        kind = _Unreadable if what == "a name that is not UTF-8" else confluent_kafka.Message
        out.append(
            kind(
                topic="t",
                partition=0,
                offset=offset,
                key=_key(offset, what),
                value=b'{"n": %d}' % offset,
                headers=headers,
                timestamp=(1, 1_700_000_000_000 + offset),
            )
        )
    return out


def _seen(msg: he.Message[Any]) -> tuple[Any, ...]:
    return (
        msg.id,
        msg.channel,
        msg.key,
        msg.payload,
        dict(msg.headers),
        msg.attempt,
        msg.timestamp,
        msg.reply_channel,
        msg.codec,
        msg.delivered_from,
    )


async def test_a_batch_handler_sees_what_a_single_handler_sees_header_for_header() -> None:
    driver = _Driver()
    receiver = he.Receiver(driver, name="hdr", lag_interval=3600.0)
    records = _records()
    count = len(records)
    batched: dict[str, he.Message[Any]] = {}
    single: dict[str, he.Message[Any]] = {}
    done = asyncio.Event()

    @receiver.subscribe("t", action="batch", batch=he.Batch(100, 0.05))
    async def in_batches(ctx: he.Context, msgs: list[he.Message[dict[str, int]]]) -> None:
        for msg in msgs:
            batched[msg.key] = msg
        if len(batched) == len(single) == count:
            done.set()

    @receiver.subscribe("t", action="single")
    async def one_by_one(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
        single[msg.key] = msg
        if len(batched) == len(single) == count:
            done.set()

    await receiver.start()
    try:
        assert len(driver.subscriptions) == 2
        for sub in driver.subscriptions:
            sub.on_messages(sub.member, _messages(records))  # type: ignore[arg-type]
        async with asyncio.timeout(30):
            await done.wait()
    finally:
        await receiver.close()
    for offset, (what, _) in enumerate(records):
        key = _key(offset, what).decode("utf-8", "surrogateescape")
        assert _seen(batched[key]) == _seen(single[key]), what
    sent = dict(records)
    got = {
        what: batched[_key(n, what).decode("utf-8", "surrogateescape")]
        for n, (what, _) in enumerate(records)
    }
    headers = {what: msg.headers for what, msg in got.items()}
    assert headers["ours"] == dict(sent["ours"])
    assert got["ours"].id == "id-0"
    assert headers["ours, a null locale"][LOCALE] == b""
    assert headers["ours, a null event time"][env.EVENT_TIME] == b""
    assert got["ours, a null event id"].id == "t-0-4"  # no id: the coordinates, as before
    assert got["ours, an empty event id"].id == "t-0-5"
    assert headers["ours, in another order"] == dict(sent["ours, in another order"])
    assert headers["ours, a name repeated"][CORRELATION_ID] == b"later"  # the last wins
    assert headers["ours, a name repeated"]["x-dup"] == b""
    assert headers["ours, the id repeated in place"][env.EVENT_ID] == b"id-7-again"
    assert got["ours, the id repeated in place"].id == "id-7-again"
    assert env.CONTENT_TYPE not in headers["ours, the id repeated in place"]
    assert headers["ours, a header of the event"]["x-app"] == b"1"
    assert got["Go-written"].reply_channel == "go-replies"
    assert headers["foreign, repeated"] == {"x": b"2", "y": b""}
    assert headers["foreign"]["x"] == b""
    assert headers["no headers"] == headers["an empty list"] == {}
    assert headers["a name that is not UTF-8"] == {}  # handed out without headers, as before
    assert got["ours, a key that is not UTF-8"].key == "k17\udcff"  # as a single handler's
    assert isinstance(headers["ours"], PairHeaders)  # its dict built only when read
    for msg in batched.values():
        with pytest.raises(TypeError):
            msg.headers["x"] = b"1"  # type: ignore[index]
