"""A single handler on Kafka fed record batches (``hexa_event.fetched``), attacked on the
real broker: garbage records amid ours, handlers raising BaseException subclasses, a
hanging handler across release and close, a second member joining while records are out
in the lanes, and close racing the one-second release. Whatever happens, every record is
settled once (handled, or dead-lettered as poison), none is lost or handled twice, one
key's records keep their order, and health says why work cannot progress."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import defaultdict
from typing import Any

import confluent_kafka
import pytest

import hexa_event as he
from hexa_event import envelope as env
from hexa_event.drivers.kafka import KafkaDriver
from hexa_event.propagation import CORRELATION_ID, LOCALE, USER
from hexa_event.testing.waiting import eventually

pytestmark = pytest.mark.kafka


def _names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:10]
    return f"kra-{tag}", f"kra-{tag}"


async def _emit(driver: KafkaDriver, topic: str, pairs: list[tuple[str, int]]) -> None:
    await he.Emitter(driver).emit_many(he.Event(topic, key, {"n": n}) for key, n in pairs)


async def _read_again(driver: KafkaDriver, topic: str, action: str, count: int) -> list[int]:
    """What the next member of the group reads: the ``n`` of each event, once ``count`` came
    and the group's lag is 0."""
    again: list[int] = []
    second = he.Receiver(driver, name=action)

    @second.subscribe(topic, action=action)
    async def handle_again(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
        again.append(msg.payload["n"])

    async with second:
        await eventually(lambda: len(again) >= count, within=60)
        await eventually(lambda: second.health()["actions"][action]["lag"] == 0, within=30)
    return again


def _ours(n: int, garbage: dict[str, bytes | None] | None = None) -> list[tuple[str, bytes | None]]:
    """The eight headers our emitters write, in their order (what the first pass reads by
    position), with ``garbage`` values in place of some."""
    values: dict[str, bytes | None] = {
        CORRELATION_ID: b"corr",
        LOCALE: b"",
        USER: b"",
        env.EVENT_ID: f"id-{n}-{uuid.uuid4().hex}".encode(),
        env.EVENT_TIME: str(int(time.time() * 1000)).encode(),
        env.CONTENT_TYPE: b"application/json",
        env.REPLY_CHANNEL: b"",
        env.PAYLOAD_ENCODER: b"json",
    }
    values.update(garbage or {})
    return list(values.items())


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, Any, bytes]]) -> None:
    """Write ``(key, headers, body)`` records in order with a raw confluent-kafka producer."""
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    failures: list[Any] = []
    for key, headers, body in records:
        producer.produce(
            topic,
            value=body,
            key=key,
            headers=headers,
            on_delivery=lambda err, msg: failures.append(err) if err is not None else None,
        )
    assert producer.flush(30) == 0
    assert failures == []


class _RawName(str):
    """A header name aiokafka's pure-Python record builder writes as these raw bytes (no
    confluent-kafka producer writes a name that is not UTF-8)."""

    raw = b"x-\xff\xfe"

    def encode(self, *args: Any, **kwargs: Any) -> bytes:
        return self.raw


async def _produce_unreadable_name(bootstrap: str, topic: str, body: bytes) -> None:
    """One record whose header name is not UTF-8, as a foreign producer may write it."""
    aiokafka = pytest.importorskip("aiokafka")
    from aiokafka.producer import message_accumulator, producer
    from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy

    with pytest.MonkeyPatch.context() as patch:  # the compiled builder encodes names itself
        for module in (message_accumulator, producer):
            patch.setattr(module, "DefaultRecordBatchBuilder", _DefaultRecordBatchBuilderPy)
        client = aiokafka.AIOKafkaProducer(bootstrap_servers=bootstrap)
        await client.start()
        try:
            headers = [(_RawName("x"), b"v"), ("x-ok", b"1")]
            await asyncio.wait_for(
                client.send_and_wait(topic, body, key=b"rawname", headers=headers), 30
            )
        finally:
            await client.stop()


def _body(n: int) -> bytes:
    return json.dumps({"n": n}).encode()


async def test_garbage_records_amid_ours_are_each_settled_once(kafka_bootstrap: str) -> None:
    """Records no emitter of ours writes, among runs of ours on one partition: those the
    core can read are handled once with what they hold (a null header value as ``b""``, the
    last of a repeated name, a null key as ``""``, a key that is not UTF-8 escaped, a
    nonsense emit time replaced by the broker's), the others dead-lettered as poison; ours
    around them handled once in order, and nothing is delivered again."""
    topic, action = _names()
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=1)
    n = iter(range(1000))
    readable: dict[int, str] = {}  # n -> what it is
    poison = 0
    records: list[tuple[bytes | None, Any, bytes]] = []

    def ours(count: int) -> None:
        for _ in range(count):
            number = next(n)
            readable[number] = "ours"
            records.append((f"k{number % 3}".encode(), _ours(number), _body(number)))

    def odd(what: str, key: bytes | None, headers: Any, handled: bool = True) -> None:
        nonlocal poison
        number = next(n)
        if handled:
            readable[number] = what
        else:
            poison += 1
        records.append((key, headers, _body(number) if what != "body" else what.encode()))

    ours(20)
    odd("null value", b"o1", [("x-null", None), ("x-ok", b"1")])
    ours(5)
    odd("repeated", b"o2", [("x-rep", b"1"), ("x-rep", b"2")])
    odd("hundreds", b"o3", [(f"x-{i}", str(i).encode()) for i in range(300)])
    ours(5)
    odd("null key", None, [("x-ok", b"1")])
    odd("odd key", b"\xff\xfe-key", [("x-ok", b"1")])
    ours(5)
    odd("time 400 digits", b"o4", _ours(0, {env.EVENT_TIME: b"9" * 400}))
    odd("time NaN", b"o5", _ours(0, {env.EVENT_TIME: b"NaN"}))
    odd("time negative", b"o6", _ours(0, {env.EVENT_TIME: b"-5000"}))
    odd("null values", b"o7", _ours(0, {env.EVENT_TIME: None, env.CONTENT_TYPE: None, USER: None}))
    ours(5)
    odd("id", b"o8", _ours(0, {env.EVENT_ID: b"\xff\xfe"}), handled=False)
    records.append((b"o9", [("x-ok", b"1")], b""))  # an empty body: not JSON
    records.append((b"o10", _ours(0), b"{not json"))
    poison += 2
    ours(20)
    seen: dict[str, list[he.Message[dict[str, int]]]] = defaultdict(list)
    try:
        await driver.provision([topic])
        _produce(kafka_bootstrap, topic, records[:40])
        await _produce_unreadable_name(kafka_bootstrap, topic, _body(900))
        readable[900] = "unreadable name"
        _produce(kafka_bootstrap, topic, records[40:])
        receiver = he.Receiver(driver, name=action)

        @receiver.subscribe(topic, action=action, concurrency=4)
        async def handle(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
            seen[readable[msg.payload["n"]]].append(msg)

        async with receiver:

            def settled() -> bool:
                counters = receiver.health()["actions"][action]
                handled = sum(map(len, seen.values()))
                return handled == len(readable) and counters["poison"] == poison

            await eventually(settled, within=60, what="every record handled or poison")
            await eventually(lambda: receiver.health()["actions"][action]["lag"] == 0, within=30)
            health = receiver.health()
            assert health["healthy"], health["reason"]
            assert health["actions"][action]["handled"] == len(readable)
        ours_seen = [m.payload["n"] for m in seen["ours"]]
        assert sorted(ours_seen) == [k for k, v in readable.items() if v == "ours"]  # once each
        for key in ("k0", "k1", "k2"):
            numbers = [m.payload["n"] for m in seen["ours"] if m.key == key]
            assert numbers == sorted(numbers)
        assert all(len(seen[what]) == 1 for what in set(readable.values()) - {"ours"})
        assert seen["null value"][0].headers == {"x-null": b"", "x-ok": b"1"}
        assert seen["null value"][0].headers["x-null"] == b""
        assert seen["repeated"][0].headers == {"x-rep": b"2"}
        assert len(seen["hundreds"][0].headers) == 300
        assert seen["null key"][0].key == ""
        assert seen["odd key"][0].key == b"\xff\xfe-key".decode("utf-8", "surrogateescape")
        assert seen["unreadable name"][0].headers == {}
        now = time.time()
        for what in ("time 400 digits", "time NaN", "time negative", "null values"):
            message = seen[what][0]
            assert message.timestamp is not None, what  # the broker's time stands in
            assert abs(message.timestamp.timestamp() - now) < 600, (what, message.timestamp)
            if what == "null values":
                assert message.headers[env.CONTENT_TYPE] == b""
        # A second member of the group reads nothing again: an end marker comes first.
        await _emit(driver, topic, [("end", -1)])
        assert await _read_again(driver, topic, action, 1) == [-1]
    finally:
        await driver.close()


class _Custom(BaseException):
    """A BaseException of the handler's own."""


_RAISED: dict[int, type[BaseException]] = {
    5: SystemExit,
    11: KeyboardInterrupt,
    17: _Custom,
    23: asyncio.CancelledError,
    29: GeneratorExit,
}
"""What the handler raises on the first attempt of the record ``n``."""


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_a_handler_raising_base_exceptions_fails_its_record_alone(
    kafka_bootstrap: str, sync: bool
) -> None:
    """SystemExit, KeyboardInterrupt, a BaseException of the handler's own, a CancelledError
    the handler raises itself (it is not being cancelled) and GeneratorExit are handler
    failures: the record is retried alone, the others handled once in order, the consumer
    goes on and nothing is delivered again."""
    topic, action = _names()
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=2)
    pairs = [(f"k{n % 4}", n) for n in range(60)]
    calls: dict[int, int] = defaultdict(int)
    order: dict[str, list[int]] = defaultdict(list)

    def note(msg: he.Message[dict[str, int]]) -> None:
        n = msg.payload["n"]
        calls[n] += 1
        if n in _RAISED and msg.attempt == 1:
            raise _RAISED[n]()
        order[msg.key].append(n)

    try:
        await _emit(driver, topic, pairs)
        receiver = he.Receiver(driver, name=action)
        policy = he.RetryPolicy(max_retries=2, initial_delay=0.1)

        if sync:

            @receiver.subscribe(topic, action=action, retry=policy, concurrency=4)
            def handle_sync(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
                note(msg)

        else:

            @receiver.subscribe(topic, action=action, retry=policy, concurrency=4)
            async def handle(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
                note(msg)

        async with receiver:
            await eventually(
                lambda: sum(map(len, order.values())) == len(pairs), within=60, what="all handled"
            )
            await eventually(lambda: receiver.health()["actions"][action]["lag"] == 0, within=30)
            health = receiver.health()
            assert health["healthy"], health["reason"]
            counters = health["actions"][action]
            assert counters["failed"] == len(_RAISED)
            assert counters["retried"] == len(_RAISED)
            assert counters["handled"] == len(pairs)
        assert {n: c for n, c in calls.items() if c != 1} == dict.fromkeys(_RAISED, 2)
        for key, numbers in order.items():  # a retry copy comes after its key's later ones
            firsts = [n for n in numbers if n not in _RAISED]
            assert firsts == [n for k, n in pairs if k == key and n not in _RAISED]
        await _emit(driver, topic, [("end", -1)])
        assert await _read_again(driver, topic, action, 1) == [-1]
    finally:
        await driver.close()
