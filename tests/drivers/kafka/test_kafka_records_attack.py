"""A single handler on Kafka fed record batches (``hexa_event.fetched``), attacked on the
real broker: garbage records amid ours, handlers raising BaseException subclasses, a
hanging handler across release and close, a second member joining while records are out
in the lanes, and close racing the one-second release. Whatever happens, every record is
settled once (handled, or dead-lettered as poison), none is lost or handled twice, one
key's records keep their order, and health says why work cannot progress."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

import confluent_kafka
import pytest
from records_helpers import names

import hexa_event as he
from attack_helpers import base_exceptions_round, emit, read_again, reports_stall
from hexa_event import envelope as env
from hexa_event import receiver as receiver_module
from hexa_event.drivers.kafka import KafkaDriver
from hexa_event.fetched import Fetched
from hexa_event.propagation import CORRELATION_ID, LOCALE, USER
from hexa_event.testing.waiting import eventually

pytestmark = pytest.mark.kafka


def _names() -> tuple[str, str]:
    return names("kra")


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
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True}
    )
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


@pytest.mark.parametrize("fail_first", [False, True], ids=["handled", "retried"])
async def test_garbage_records_amid_ours_are_each_settled_once(
    kafka_bootstrap: str, fail_first: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Records no emitter of ours writes, among runs of ours on one partition: those the
    core can read are handled once with what they hold (a null header value as ``b""``, the
    last of a repeated name, a null key as ``""``, a key that is not UTF-8 escaped, a
    nonsense emit time replaced by the broker's), the others dead-lettered as poison; ours
    around them handled once in order, and nothing is delivered again. With ``fail_first``
    the handler fails each odd record once: its retry copy carries what it held. Every log
    line is UTF-8 text (a key that is not UTF-8 shows escaped)."""
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
    records.append((b"\xfe\xff-poison", [("x-ok", b"1")], b"{not json"))
    poison += 3
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
            what = readable[msg.payload["n"]]
            if fail_first and what != "ours" and msg.attempt == 1:
                raise RuntimeError(f"{what} fails once")
            seen[what].append(msg)

        async with receiver:

            def settled() -> bool:
                counters = receiver.health()["actions"][action]
                handled = sum(map(len, seen.values()))
                return handled == len(readable) and counters["poison"] == poison

            await eventually(settled, within=60, what="every record handled or poison")
            await eventually(lambda: receiver.health()["actions"][action]["lag"] == 0, within=30)
            health = receiver.health()
            assert health["healthy"], health["reason"]
            counters = health["actions"][action]
            assert counters["handled"] == len(readable)
            odd_ones = sum(what != "ours" for what in readable.values())
            assert counters["failed"] == counters["retried"] == (odd_ones if fail_first else 0)
        ours_seen = [m.payload["n"] for m in seen["ours"]]
        assert sorted(ours_seen) == [k for k, v in readable.items() if v == "ours"]  # once each
        for key in ("k0", "k1", "k2"):
            numbers = [m.payload["n"] for m in seen["ours"] if m.key == key]
            assert numbers == sorted(numbers)
        assert all(len(seen[what]) == 1 for what in set(readable.values()) - {"ours"})

        def own(what: str) -> dict[str, bytes]:  # (a retry copy adds headers of ours)
            message = seen[what][0]
            assert message.attempt == (2 if fail_first else 1)
            return {k: v for k, v in message.headers.items() if k.startswith("x-")}

        assert own("null value") == {"x-null": b"", "x-ok": b"1"}
        assert seen["null value"][0].headers["x-null"] == b""
        assert own("repeated") == {"x-rep": b"2"}
        assert len(own("hundreds")) == 300
        assert seen["null key"][0].key == ""
        assert seen["odd key"][0].key == b"\xff\xfe-key".decode("utf-8", "surrogateescape")
        assert own("unreadable name") == {}
        now = time.time()
        for what in ("time 400 digits", "time NaN", "time negative", "null values"):
            message = seen[what][0]
            assert message.timestamp is not None, what  # the broker's time stands in
            assert abs(message.timestamp.timestamp() - now) < 600, (what, message.timestamp)
            if what == "null values":
                assert message.headers[env.CONTENT_TYPE] == b""
        # A second member of the group reads nothing again: an end marker comes first.
        await emit(driver, topic, [("end", -1)])
        assert await read_again(driver, topic, action, 1) == [-1]
        logged = [r.getMessage() for r in caplog.records if r.name.startswith("hexa_event")]
        for line in logged:
            line.encode("utf-8")  # what a UTF-8 log handler writes, or it loses the line
        assert any("\\xfe\\xff-poison" in line for line in logged)  # its bytes, escaped
    finally:
        await driver.close()


@pytest.mark.parametrize("mode", ["async", "sync", "batch"])
async def test_a_handler_raising_base_exceptions_fails_its_record_alone(
    kafka_bootstrap: str, mode: str
) -> None:
    """SystemExit, KeyboardInterrupt, a BaseException of the handler's own, a CancelledError
    the handler raises itself (it is not being cancelled) and GeneratorExit are handler
    failures: the record (for a batch handler: its batch) is retried alone, the others
    handled once in order, the consumer goes on and nothing is delivered again."""
    topic, action = _names()
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=2)
    try:
        await base_exceptions_round(driver, topic, action, mode, emit, read_again)
    finally:
        await driver.close()


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_a_hanging_handler_is_reported_and_close_gives_back_exactly_its_records(
    kafka_bootstrap: str, sync: bool
) -> None:
    """A handler that hangs: its batches are released (only its key's records stay in
    flight), health says the action stalls, and close (its drain cut at drain_timeout)
    gives back exactly the records not handled: the next member of the group gets those,
    in order, and none of those handled."""
    topic, action = _names()
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=3)
    pairs = [("hang" if n % 15 == 7 else f"k{n % 9}", n) for n in range(150)]
    hanging = [n for key, n in pairs if key == "hang"]
    others = {n for key, n in pairs if key != "hang"}
    handled: list[int] = []
    stop_thread = threading.Event()
    try:
        await emit(driver, topic, pairs)
        receiver = he.Receiver(driver, name=action, stall_timeout=0.5, drain_timeout=0.5)

        if sync:

            @receiver.subscribe(topic, action=action, concurrency=4)
            def handle_sync(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
                if msg.key == "hang":
                    stop_thread.wait(120)
                    return  # (after close: its result is ignored)
                handled.append(msg.payload["n"])

        else:

            @receiver.subscribe(topic, action=action, concurrency=4)
            async def handle(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
                if msg.key == "hang":
                    await asyncio.Event().wait()  # until close cancels it
                handled.append(msg.payload["n"])

        await receiver.start()
        try:
            await eventually(lambda: set(handled) == others, within=60, what="the others handled")
            info = receiver.subscriptions[action]
            await eventually(
                lambda: not info.records and info.in_flight == len(hanging),
                within=30,
                what="the batches released: only the hanging key's records in flight",
            )

            await eventually(
                lambda: reports_stall(receiver, action),
                within=30,
                what="health reports the hanging handler",
            )
        finally:
            started = time.monotonic()
            await receiver.close()
            closing = time.monotonic() - started
            stop_thread.set()
        assert closing < 15
        assert sorted(handled) == sorted(others)  # once each
        assert await read_again(driver, topic, action, len(hanging)) == hanging
    finally:
        stop_thread.set()
        await driver.close()


async def test_close_with_a_release_pending_and_a_release_after_close(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() while a batch's release is pending (its records still running or queued)
    gives the batch's unhandled records back and cancels the release; a release called
    after close changes nothing. The next member gets exactly the records not handled."""
    monkeypatch.setattr(receiver_module, "_RELEASE_AFTER", 60.0)  # pending at close, surely
    made: list[Fetched] = []

    class Recorded(Fetched):
        __slots__ = ()

        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            made.append(self)

    monkeypatch.setattr(receiver_module, "Fetched", Recorded)
    topic, action = _names()
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=1)
    pairs = [("hang" if n in (3, 4, 12) else f"k{n % 3}", n) for n in range(30)]
    hanging = [n for key, n in pairs if key == "hang"]
    handled: list[int] = []
    try:
        await emit(driver, topic, pairs)
        receiver = he.Receiver(driver, name=action, drain_timeout=0.2)

        @receiver.subscribe(topic, action=action, concurrency=4)
        async def handle(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
            if msg.key == "hang":
                await asyncio.Event().wait()  # until close cancels it
            handled.append(msg.payload["n"])

        await receiver.start()
        info = receiver.subscriptions[action]
        try:
            await eventually(lambda: len(handled) == len(pairs) - len(hanging), within=60)
            pending = [f for f in made if f.batch.outcome is None]
            assert pending  # the hanging records' batch, not released
            assert all(f.timer is not None and not f.timer.cancelled() for f in pending)
        finally:
            await receiver.close()
        for fetched in pending:
            assert fetched.timer is not None
            assert fetched.timer.cancelled()
            assert fetched.batch.outcome is not None  # given back
            receiver._release(info, fetched)  # a release firing after close: nothing
            assert not fetched.out
        assert not info.pending  # every settlement written
        assert not info.pending_records
        assert sorted(handled) == [n for n in range(30) if n not in hanging]
        assert await read_again(driver, topic, action, len(hanging)) == hanging
    finally:
        await driver.close()


async def test_a_member_joining_while_records_are_out_takes_over_without_loss_or_repeat(
    kafka_bootstrap: str,
) -> None:
    """A second member joins the group while the first has records in its lanes, their
    batches released (a slow record hangs in every lane until the revoke waits for them).
    The revoke lets them finish and commits: the union of what both members handled is
    every record, each once, and one key's records reach each member in order."""
    topic, action = _names()
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=4)
    keys = [f"k{i}" for i in range(16)]
    first_pairs = [(keys[n % 16], n) for n in range(400)]
    slow = set(range(160, 176))  # one of each key: every lane, every partition waits
    go_on = asyncio.Event()
    seen: dict[str, dict[str, list[int]]] = {"a": defaultdict(list), "b": defaultdict(list)}

    def receiver_of(name: str) -> he.Receiver:
        receiver = he.Receiver(driver, name=f"{action}-{name}")

        @receiver.subscribe(topic, action=action, concurrency=16)
        async def handle(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
            n = msg.payload["n"]
            if n in slow:
                await go_on.wait()
            seen[name][msg.key].append(n)

        return receiver

    def count() -> int:
        return sum(len(numbers) for member in seen.values() for numbers in member.values())

    first, second = receiver_of("a"), receiver_of("b")
    try:
        await emit(driver, topic, first_pairs)
        await first.start()
        info = first.subscriptions[action]
        try:
            waiting = {n for _, n in first_pairs if n >= min(slow)}  # and those behind them
            await eventually(lambda: count() == len(first_pairs) - len(waiting), within=60)
            await eventually(
                lambda: not info.records and info.in_flight == len(waiting),
                within=30,
                what="the first member's batches released",
            )
            kafka_sub: Any = info.subscription
            joining = asyncio.create_task(second.start())

            def revoking() -> bool:  # (the revoke waits for the records out in the lanes)
                return any(s.revoking for s in kafka_sub._partitions.values())

            await eventually(revoking, within=60, what="the rebalance began")
            go_on.set()
            await asyncio.wait_for(joining, 60)
            more = [(keys[n % 16], n) for n in range(400, 600)]
            await emit(driver, topic, more)
            everything = first_pairs + more
            await eventually(lambda: count() == len(everything), within=60, what="all handled")
            for receiver in (first, second):
                health = receiver.health()
                await eventually(lambda r=receiver: r.health()["actions"][action]["lag"] == 0)
                assert health["healthy"], health["reason"]
        finally:
            go_on.set()
            await second.close()
            await first.close()
        numbers = sorted(n for member in seen.values() for ns in member.values() for n in ns)
        assert numbers == [n for _, n in everything]  # every record, once
        for member in seen.values():
            for key, ns in member.items():
                assert ns == sorted(ns), (key, ns)
        assert any(seen["b"].values())  # the second member took partitions over
    finally:
        await driver.close()


async def test_a_revoke_past_its_timeout_repeats_only_what_it_gave_back_unsettled(
    kafka_bootstrap: str,
) -> None:
    """As above, but the first member's slow records hang past ``revoke_timeout``: the
    revoke gives their partitions up unsettled and the second member handles those records
    again. Only records the first member still had unsettled then are handled twice; every
    record is handled, one key's records reach each member in order, and both go on."""
    topic, action = _names()
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=4, revoke_timeout=2)
    keys = [f"k{i}" for i in range(16)]
    first_pairs = [(keys[n % 16], n) for n in range(400)]
    slow = set(range(160, 176))  # one of each key, in the first member only
    go_on = asyncio.Event()
    seen: dict[str, dict[str, list[int]]] = {"a": defaultdict(list), "b": defaultdict(list)}

    def receiver_of(name: str) -> he.Receiver:
        receiver = he.Receiver(driver, name=f"{action}-{name}")

        @receiver.subscribe(topic, action=action, concurrency=16)
        async def handle(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
            n = msg.payload["n"]
            if name == "a" and n in slow:
                await go_on.wait()
            seen[name][msg.key].append(n)

        return receiver

    def handled(name: str) -> list[int]:
        return [n for numbers in seen[name].values() for n in numbers]

    first, second = receiver_of("a"), receiver_of("b")
    unsettled = {n for _, n in first_pairs if n >= min(slow)}
    try:
        await emit(driver, topic, first_pairs)
        await first.start()
        info = first.subscriptions[action]
        try:
            await eventually(lambda: len(handled("a")) == min(slow), within=60)
            await eventually(
                lambda: not info.records and info.in_flight == len(unsettled),
                within=30,
                what="the first member's batches released",
            )
            await asyncio.wait_for(second.start(), 60)

            def taken_over() -> bool:
                health = second.health()["actions"][action]
                return any(p.startswith(f"{topic}-") for p in health["assignment"]) and (
                    health["lag"] == 0
                )

            await eventually(taken_over, within=60, what="the second member took partitions")
            await eventually(lambda: bool(handled("b")), within=30)
            go_on.set()
            more = [(keys[n % 16], n) for n in range(400, 600)]
            await emit(driver, topic, more)
            everything = [n for _, n in first_pairs + more]
            await eventually(
                lambda: set(handled("a")) | set(handled("b")) == set(everything),
                within=60,
                what="every record handled",
            )
            for receiver in (first, second):
                await eventually(lambda r=receiver: r.health()["actions"][action]["lag"] == 0)
                assert receiver.health()["healthy"], receiver.health()["reason"]
        finally:
            go_on.set()
            await second.close()
            await first.close()
        counts: dict[int, int] = defaultdict(int)
        for n in handled("a") + handled("b"):
            counts[n] += 1
        twice = {n for n, c in counts.items() if c > 1}
        assert twice  # the revoke gave records back unsettled
        assert twice <= unsettled, sorted(twice - unsettled)
        assert max(counts.values()) == 2
        for member in seen.values():
            for key, ns in member.items():
                assert ns == sorted(ns), (key, ns)
    finally:
        await driver.close()


async def test_an_in_place_back_off_across_release_and_close_gives_its_key_back_in_order(
    kafka_bootstrap: str,
) -> None:
    """A record failing with an in-place retry backs off while its batch is released: its
    key's records behind it wait (health does not call that a stall), the others are
    handled. Close cuts the back-off: the failed record and those behind it are given
    back, and the next member gets exactly those, in order."""
    topic, action = _names()
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=2)
    pairs = [("f" if n in (4, 9, 13) else f"k{n % 5}", n) for n in range(60)]
    behind = [n for key, n in pairs if key == "f"]
    handled: list[int] = []
    failures = 0
    try:
        await emit(driver, topic, pairs)
        receiver = he.Receiver(driver, name=action, stall_timeout=0.5, drain_timeout=5)
        policy = he.RetryPolicy(max_retries=3, initial_delay=60, in_place=True)

        @receiver.subscribe(topic, action=action, retry=policy, concurrency=4)
        async def handle(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
            nonlocal failures
            if msg.key == "f":
                failures += 1
                raise RuntimeError("the f key fails")
            handled.append(msg.payload["n"])

        await receiver.start()
        info = receiver.subscriptions[action]
        try:
            await eventually(lambda: len(handled) == len(pairs) - len(behind), within=60)
            await eventually(
                lambda: not info.records and info.in_flight == len(behind),
                within=30,
                what="the batches released: the backing-off key's records in flight",
            )
            await eventually(
                lambda: receiver.health()["actions"][action]["oldest_unsettled_age"] == 0.0,
                within=10,
                what="no stall clock runs for a key backing off",
            )
            health = receiver.health()
            assert health["healthy"], health["reason"]
            assert failures == 1
        finally:
            started = time.monotonic()
            await receiver.close()
        assert time.monotonic() - started < 5  # the back-off ends at close, not at its time
        assert sorted(handled) == [n for key, n in pairs if key != "f"]
        assert await read_again(driver, topic, action, len(behind)) == behind
    finally:
        await driver.close()


async def test_a_handler_closing_its_own_receiver_gives_back_its_record(
    kafka_bootstrap: str,
) -> None:
    """A handler that closes its own receiver waits for the drain, which waits for it: at
    drain_timeout it is cancelled and its record given back with every record not
    handled. Close ends; the next member gets exactly the records not handled."""
    topic, action = _names()
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=2)
    pairs = [(f"k{n % 6}", n) for n in range(120)]
    handled: list[int] = []
    closer: list[asyncio.Task[Any] | None] = []
    try:
        await emit(driver, topic, pairs)
        receiver = he.Receiver(driver, name=action, drain_timeout=0.5)

        @receiver.subscribe(topic, action=action, concurrency=4)
        async def handle(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
            if msg.payload["n"] == 50:
                closer.append(asyncio.current_task())
                await receiver.close()
            handled.append(msg.payload["n"])

        started = time.monotonic()
        await receiver.start()
        await asyncio.wait_for(receiver.wait_closed(), 60)
        assert time.monotonic() - started < 30
        assert closer  # the handler ran, and is the one that closed
        assert 50 not in handled  # cancelled at the end of the drain
        assert len(handled) == len(set(handled))
        rest = sorted({n for _, n in pairs} - set(handled))
        assert sorted(await read_again(driver, topic, action, len(rest))) == rest
    finally:
        await driver.close()
