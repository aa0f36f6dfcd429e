"""Batch handlers over record batches (``Subscription.fetch_records``): the batch
conformance checks and the per-key order through the careful path, on the memory driver
behind an adapter that hands its deliveries out as record batches."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

import hexa_event
import hexa_event.receiver as receiver_module
from hexa_event import envelope as env
from hexa_event.batching import Batch, BatchLanes, fetches_records
from hexa_event.connect import wrap
from hexa_event.context import Context
from hexa_event.driver import (
    Delivery,
    Driver,
    Outcome,
    RawRecord,
    RecordBatch,
    Subscription,
    SubscriptionSpec,
    SubscriptionStatus,
)
from hexa_event.event import Event, Message
from hexa_event.testing.batches import BatchConformance
from hexa_event.testing.conformance import DriverConformance
from hexa_event.testing.settling import FailingSettle
from hexa_event.testing.waiting import Collector, eventually


class _Records(RecordBatch):
    """Deliveries handed out as one record batch."""

    __slots__ = ("deliveries",)

    def __init__(self, deliveries: Sequence[Delivery]) -> None:
        super().__init__()
        self.deliveries = list(deliveries)
        for delivery in deliveries:
            record = delivery.record
            self.channels.append(record.channel)
            self.keys.append(record.key)
            self.headers.append(list(record.headers.items()))
            self.bodies.append(record.body)
            self.natives.append(delivery.native)

    def _delivery(self, index: int) -> Delivery:
        return self.deliveries[index]

    def timestamp(self, index: int) -> float | None:
        return self.deliveries[index].timestamp


class _RecordsSubscription(Subscription):
    def __init__(self, inner: Subscription, log: list[int]) -> None:
        self._inner = inner
        self.fetched = log
        """The size of every record batch handed out."""

    async def fetch(self, max_count: int) -> Sequence[Delivery]:
        return await self._inner.fetch(max_count)  # single handlers and the contract checks

    async def fetch_records(self, max_count: int) -> RecordBatch | None:
        deliveries = await self._inner.fetch(max_count)
        if not deliveries:
            return None
        self.fetched.append(len(deliveries))
        return _Records(deliveries)

    async def settle(self, deliveries: Sequence[Delivery]) -> None:
        await self._inner.settle(deliveries)

    async def settle_records(self, batches: Sequence[RecordBatch]) -> None:
        out: list[Delivery] = []
        for batch in batches:
            assert isinstance(batch, _Records)
            assert batch.outcome is not None
            for index, delivery in enumerate(batch.deliveries):
                if index in batch.taken:
                    continue
                if delivery.outcome is None:
                    delivery.ack() if batch.outcome is Outcome.ACK else delivery.nack()
                out.append(delivery)
        await self._inner.settle(out)

    async def close(self) -> None:
        await self._inner.close()

    def status(self) -> SubscriptionStatus:
        return self._inner.status()

    async def lag(self) -> Mapping[str, int] | None:
        return await self._inner.lag()


class RecordBatches(Driver):
    """Wraps a driver: its subscriptions hand out record batches; ``holds=False`` also
    says the broker holds nothing back (so the core holds records until due, as on
    Kafka)."""

    def __init__(self, inner: Driver, *, holds: bool = True) -> None:
        self.inner = inner
        self.features = (
            inner.features
            if holds
            else dataclasses.replace(
                inner.features, delayed_nack=False, delayed_publish=False, scheduled_publish=False
            )
        )
        self.fetched: list[int] = []

    async def publish(self, records: Sequence[RawRecord]) -> None:
        await self.inner.publish(records)

    async def provision(self, channels: Sequence[str]) -> None:
        await self.inner.provision(channels)

    async def subscribe(self, spec: SubscriptionSpec) -> Subscription:
        return _RecordsSubscription(await self.inner.subscribe(spec), self.fetched)

    async def close(self) -> None:
        await self.inner.close()


def _held_until(sealed: RawRecord, due: float) -> RawRecord:
    """``sealed`` scheduled for ``due`` (seconds since the epoch): the core holds it until then."""
    return RawRecord(
        sealed.channel,
        sealed.key,
        {**sealed.headers, env.DELIVER_AT: str(int(due * 1000)).encode()},
        sealed.body,
    )


class TestMemoryRecordBatchConformance(BatchConformance):
    """The batch (and settle-everything) checks, with every batch handler fed record
    batches."""

    timeout = 10.0

    def setup_method(self) -> None:
        self.url = f"memory://records-{uuid.uuid4().hex}"

    async def new_driver(self) -> Driver:
        return RecordBatches(hexa_event.connect(self.url))


def test_only_subscriptions_that_override_both_fetch_records() -> None:
    class Half(_RecordsSubscription):
        settle_records = Subscription.settle_records  # type: ignore[assignment]

    assert fetches_records(_RecordsSubscription.__new__(_RecordsSubscription))
    assert not fetches_records(Half.__new__(Half))
    assert not fetches_records(None)


async def _lanes_of(receiver: hexa_event.Receiver, action: str) -> BatchLanes:
    lanes = receiver.subscriptions[action].lanes
    assert isinstance(lanes, BatchLanes)
    return lanes


async def test_record_batches_are_used_with_one_batch_at_a_time_only() -> None:
    url = f"memory://records-{uuid.uuid4().hex}"
    driver = wrap(RecordBatches(hexa_event.connect(url)))
    plain = wrap(FailingSettle(hexa_event.connect(url)))
    receiver = driver.receiver("svc")
    other = plain.receiver("svc")
    got = Collector()

    async def handle(ctx: Context, msgs: list[Message[Any]]) -> None:
        for m in msgs:
            got.add(m.id)

    receiver.subscribe("c", action="one", batch=Batch(10, 0.01), handler=handle)
    receiver.subscribe("c", action="three", batch=Batch(10, 0.01), concurrency=3, handler=handle)
    other.subscribe("c", action="wrapped", batch=Batch(10, 0.01), handler=handle)
    try:
        await receiver.start()
        await other.start()
        assert (await _lanes_of(receiver, "one")).records
        assert not (await _lanes_of(receiver, "three")).records
        assert not (await _lanes_of(other, "wrapped")).records
        await driver.emitter().emit(Event("c", "k", {"n": 1}))
        await got.wait_for(3, within=10)
    finally:
        await receiver.close()
        await other.close()
        await driver.close()


async def test_a_key_waits_behind_its_record_held_until_due() -> None:
    """A record not due yet (the core holds it: the driver cannot) is taken out of its
    batch; the key's later records, in the same batch and in later ones, wait behind it;
    other keys go on."""
    url = f"memory://records-{uuid.uuid4().hex}"
    adapter = RecordBatches(hexa_event.connect(url), holds=False)
    driver = wrap(adapter)
    receiver = driver.receiver("svc")
    seen = Collector()

    @receiver.subscribe("c", action="a", batch=Batch(max_size=50, max_wait=0.01))
    async def handle(ctx: Context, msgs: list[Message[Any]]) -> None:
        for m in msgs:
            seen.add((m.key, m.payload["n"]))

    emitter = driver.emitter()
    due = time.time() + 1.5
    held = _held_until(emitter.seal(Event("c", "k", {"n": 0})), due)
    try:
        await receiver.start()
        await driver.publish(
            [held, *(emitter.seal(Event("c", key, {"n": n})) for n in (1, 2) for key in "kj")]
        )
        await seen.wait_for(2, within=10)
        assert sorted(seen.items) == [("j", 1), ("j", 2)]  # k waits behind its held record
        await emitter.emit(Event("c", "k", {"n": 3}))  # a later batch: waits too
        await emitter.emit(Event("c", "j", {"n": 3}))
        await eventually(lambda: ("j", 3) in seen.items, within=10, what="j goes on")
        assert not any(key == "k" for key, _ in seen.items)
        await seen.wait_for(6, within=10)
        assert time.time() >= due
        assert [n for key, n in seen.items if key == "k"] == [0, 1, 2, 3]
        assert adapter.fetched, "record batches were handed out"
        await eventually(
            lambda: receiver.health()["actions"]["a"]["in_flight"] == 0,
            within=10,
            what="everything settled",
        )
    finally:
        await receiver.close()
        await driver.close()


async def test_a_record_s_context_headers_are_checked_as_a_delivery_s() -> None:
    """Over record batches, a malformed context header (a correlation id or locale that is
    not UTF-8, a user that is not hexa's JSON) makes the record poison, as on the careful
    path; a real user and a traceparent reach the handler; the other records of the batch
    are handled."""
    url = f"memory://records-{uuid.uuid4().hex}"
    adapter = RecordBatches(hexa_event.connect(url))
    driver = wrap(adapter)
    receiver = driver.receiver("svc")
    seen = Collector()

    @receiver.subscribe("c", action="a", batch=Batch(max_size=50, max_wait=0.05))
    async def handle(ctx: Context, msgs: list[Message[Any]]) -> None:
        for m in msgs:
            seen.add(m.payload["n"])

    emitter = driver.emitter()
    user = hexa_event.context.User(id="u-1", name="Ann")
    ctx = Context(
        correlation_id="c-1", user=user, traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    )

    def record(n: int, **changes: Any) -> RawRecord:
        sealed = emitter.seal(Event("c", f"k{n}", {"n": n}), ctx if n == 1 else None)
        return RawRecord("c", sealed.key, {**sealed.headers, **changes}, sealed.body)

    try:
        await receiver.start()
        await driver.publish(
            [
                record(0),
                record(1),  # a user and a traceparent: fine
                record(2, _ctx_correlation_id=b"\xff\xfe"),
                record(3, _ctx_locale=b"\xc3("),
                record(4, _ctx_user=b"not json"),
                record(5, _ctx_user=b'{"_user_type": "nobody"}'),
                record(8),
            ]
        )
        await seen.wait_for(3, within=10)
        counters = receiver.subscriptions["a"].counters
        await eventually(lambda: counters.poison == 4, within=10, what="4 poison records")
        assert sorted(seen.items) == [0, 1, 8]
        assert counters.handled == 3
        assert adapter.fetched, "record batches were handed out"
    finally:
        await receiver.close()
        await driver.close()


async def test_a_record_held_until_due_is_handled_when_it_falls_due_during_its_batch() -> None:
    """The record held back (not due yet) falls due while the rest of its batch is still
    being handled: it is handled right after that batch. Before, its key was released while
    the record still sat with the running batch, which then queued it uncounted: it was
    never handled (or a later batch logged "no free delivery to take; recounting")."""
    url = f"memory://records-{uuid.uuid4().hex}"
    driver = wrap(RecordBatches(hexa_event.connect(url), holds=False))
    receiver = driver.receiver("svc")
    seen = Collector()

    @receiver.subscribe("c", action="a", batch=Batch(max_size=50, max_wait=0.01))
    async def handle(ctx: Context, msgs: list[Message[Any]]) -> None:
        for m in msgs:
            seen.add((m.key, m.payload["n"]))
        if any(m.key == "slow" for m in msgs):
            await asyncio.sleep(1.0)  # the held record falls due meanwhile

    emitter = driver.emitter()
    due = time.time() + 0.3
    held = _held_until(emitter.seal(Event("c", "k", {"n": 0})), due)
    try:
        await receiver.start()
        await driver.publish([held, emitter.seal(Event("c", "slow", {"n": 1}))])
        await seen.wait_for(2, within=10)
        assert seen.items == [("slow", 1), ("k", 0)]
        await eventually(
            lambda: receiver.health()["actions"]["a"]["in_flight"] == 0,
            within=10,
            what="everything settled",
        )
    finally:
        await receiver.close()
        await driver.close()


async def test_a_record_s_ids_are_checked_as_a_delivery_s() -> None:
    """A record whose root event id is not UTF-8 (which the common reading of a record
    skips), failed by the handler, is dead-lettered as poison: it cannot be retried. Before,
    reading it again to retry it raised out of the batch: the batch was given back and
    handled again at once, without end ("Task exception was never retrieved" each time)."""
    url = f"memory://records-{uuid.uuid4().hex}"
    adapter = RecordBatches(hexa_event.connect(url))
    driver = wrap(adapter)
    receiver = driver.receiver("svc")
    runs = Collector()

    @receiver.subscribe("c", action="a", batch=Batch(max_size=50, max_wait=0.05))
    async def handle(ctx: Context, msgs: list[Message[Any]]) -> None:
        for m in msgs:
            runs.add(m.payload["n"])
        raise hexa_event.PermanentError("rejected")

    emitter = driver.emitter()
    sealed = emitter.seal(Event("c", "k", {"n": 0}))
    malformed = RawRecord("c", "k", {**sealed.headers, env.ROOT_EVENT_ID: b"\xff\xfe"}, sealed.body)
    try:
        await receiver.start()
        await driver.publish([malformed, emitter.seal(Event("c", "j", {"n": 1}))])
        counters = receiver.subscriptions["a"].counters
        await eventually(
            lambda: (counters.poison, counters.dead_lettered) == (1, 2),
            within=10,
            what="the malformed record dead-lettered as poison, the other as failed",
        )
        await eventually(
            lambda: receiver.health()["actions"]["a"]["in_flight"] == 0,
            within=10,
            what="everything settled",
        )
        assert sorted(runs.items) == [0, 1]  # each once
        assert adapter.fetched, "record batches were handed out"
    finally:
        await receiver.close()
        await driver.close()


async def test_a_record_batch_backing_off_in_place_is_not_a_stall() -> None:
    # A record batch kept its fetch time as stall clock: while its batch waited out an
    # in-place retry's back-off (longer than stall_timeout), health said stalled, and once
    # the back-off ended the clock still counted from the fetch.
    url = f"memory://records-{uuid.uuid4().hex}"
    driver = wrap(RecordBatches(hexa_event.connect(url)))
    receiver = driver.receiver("svc", stall_timeout=0.5)
    second_run, release = asyncio.Event(), asyncio.Event()
    batches: list[list[str]] = []

    async def handle(ctx: Context, msgs: list[Message[Any]]) -> None:
        batches.append([m.key for m in msgs])
        for msg in msgs:
            if msg.key == "k":
                if msg.attempt == 1:
                    raise hexa_event.BatchFailed({msgs.index(msg): RuntimeError("in place")})
                second_run.set()
                await release.wait()

    receiver.subscribe(
        "c",
        action="a",
        batch=Batch(max_size=10, max_wait=0.2),
        retry=hexa_event.RetryPolicy(in_place=True, initial_delay=2.0),
        handler=handle,
    )
    async with receiver:
        assert (await _lanes_of(receiver, "a")).records
        try:
            await driver.emitter().emit_many(
                [Event("c", "k", {"n": 1}), Event("c", "other", {"n": 2})]
            )
            await eventually(lambda: len(batches) == 1, within=5, what="the first batch")
            backing_off_until = time.monotonic() + 2.0
            while time.monotonic() < backing_off_until - 0.4:  # well past stall_timeout
                health = receiver.health()
                assert health["healthy"], health["reason"]
                await asyncio.sleep(0.02)
            await asyncio.wait_for(second_run.wait(), 5)
            health = receiver.health()  # its record batch's clock starts again now
            assert health["healthy"], health["reason"]
        finally:
            release.set()
        await eventually(lambda: receiver.health()["actions"]["a"]["in_flight"] == 0, within=5)
    await driver.close()


async def test_records_read_the_same_whatever_headers_they_carry() -> None:
    """A record of exactly our emitters' eight headers (read in one call), one with an
    application header and a source channel (read name by name) and one with eight headers
    of which ours are not all (the careful path) reach the handler with the same fields as
    a delivery's."""
    url = f"memory://records-{uuid.uuid4().hex}"
    adapter = RecordBatches(hexa_event.connect(url))
    driver = wrap(adapter)
    receiver = driver.receiver("svc")
    seen: dict[int, Message[Any]] = {}
    got = Collector()

    @receiver.subscribe("c", action="a", batch=Batch(max_size=50, max_wait=0.05))
    async def handle(ctx: Context, msgs: list[Message[Any]]) -> None:
        for m in msgs:
            seen[m.payload["n"]] = m
            got.add(m.payload["n"])

    emitter = driver.emitter()
    plain = emitter.seal(Event("c", "k0", {"n": 0}, reply_channel="back"))
    extra = emitter.seal(Event("c", "k1", {"n": 1}, headers={"x-app": "v"}))
    extra = RawRecord("c", "k1", {**extra.headers, env.SOURCE_CHANNEL: b"orders"}, extra.body)
    foreign = emitter.seal(Event("c", "k2", {"n": 2}))
    headers = {k: v for k, v in foreign.headers.items() if k != env.REPLY_CHANNEL}
    foreign = RawRecord("c", "k2", {**headers, "x-other": b"1"}, foreign.body)
    assert (len(plain.headers), len(foreign.headers)) == (8, 8)
    try:
        await receiver.start()
        await driver.publish([plain, extra, foreign])
        await got.wait_for(3, within=10)
        assert (seen[0].channel, seen[0].reply_channel, seen[0].key) == ("c", "back", "k0")
        assert seen[0].id == plain.headers[env.EVENT_ID].decode()
        assert (seen[1].channel, seen[1].headers["x-app"], seen[1].delivered_from) == (
            "orders",
            b"v",
            "c",
        )
        assert (seen[2].reply_channel, seen[2].headers["x-other"]) == ("", b"1")
        for m in seen.values():
            assert (m.attempt, m.codec) == (1, "json")
            assert m.timestamp is not None
        assert receiver.subscriptions["a"].counters.handled == 3
        assert adapter.fetched, "record batches were handed out"
    finally:
        await receiver.close()
        await driver.close()


class TestMemoryRecordsConformance(DriverConformance):
    """Every conformance check, single handlers included, on the memory driver handing its
    records out as record batches, the core holding records until due (as on Kafka): single
    handlers run over record batches (``hexa_event.fetched``)."""

    timeout = 10.0

    def setup_method(self) -> None:
        self.url = f"memory://records-all-{uuid.uuid4().hex}"

    async def new_driver(self) -> Driver:
        return RecordBatches(hexa_event.connect(self.url), holds=False)


async def test_single_handlers_read_record_batches_without_deliveries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A single handler over record batches: our emitters' records reach it with no
    delivery taken out; a failing one is taken out, retried alone, and its key's later
    records wait behind it (in-place retry)."""
    taken: list[int] = []
    take = _Records._delivery

    def spy(self: _Records, index: int) -> Delivery:
        taken.append(int(self.keys[index][1:]))
        return take(self, index)

    monkeypatch.setattr(_Records, "_delivery", spy)
    adapter = RecordBatches(hexa_event.connect(f"memory://records-{uuid.uuid4().hex}"))
    driver = wrap(adapter)
    receiver = driver.receiver("svc")
    seen = Collector()
    calls: list[int] = []

    @receiver.subscribe(
        "c", action="a", retry=hexa_event.RetryPolicy(initial_delay=0.01, in_place=True)
    )
    async def handle(ctx: Context, msg: Message[Any]) -> None:
        calls.append(msg.payload["n"])
        if msg.payload["n"] == 7 and calls.count(7) == 1:
            raise RuntimeError("7 fails once")
        assert ctx.event_id == msg.id
        seen.add(msg.payload["n"])

    try:
        await receiver.start()
        assert receiver.subscriptions["a"].reads_records
        await driver.emitter().emit_many(Event("c", f"k{n % 3}", {"n": n}) for n in range(30))
        await seen.wait_for(30, within=10)
        assert adapter.fetched, "record batches were handed out"
        assert taken == [7 % 3]  # only the failed record became a delivery
        assert [n for n in calls if n % 3 == 1] == [1, 4, 7, 7, 10, 13, 16, 19, 22, 25, 28]
        await eventually(
            lambda: receiver.health()["actions"]["a"]["in_flight"] == 0,
            within=10,
            what="every record settled",
        )
    finally:
        await receiver.close()
        await driver.close()


async def test_a_record_taken_out_of_its_batch_counts_once_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``in_flight`` counts the records not written back once each: a failed record taken
    out of its batch is a delivery of its own and no longer one of the batch's."""
    monkeypatch.setattr(receiver_module, "_RELEASE_AFTER", 60.0)  # no release meanwhile
    adapter = RecordBatches(hexa_event.connect(f"memory://records-{uuid.uuid4().hex}"))
    driver = wrap(adapter)
    receiver = driver.receiver("svc")
    gate = asyncio.Event()
    calls: list[int] = []

    @receiver.subscribe(
        "c", action="a", retry=hexa_event.RetryPolicy(initial_delay=0.01, in_place=True)
    )
    async def handle(ctx: Context, msg: Message[Any]) -> None:
        calls.append(msg.payload["n"])
        if msg.payload["n"] == 2:
            if calls.count(2) == 1:
                raise RuntimeError("2 fails once")
            await gate.wait()

    try:
        await driver.emitter().emit_many(Event("c", "k", {"n": n}) for n in range(5))
        await receiver.start()
        await eventually(lambda: calls.count(2) == 2, within=10, what="2 run again")
        assert len(adapter.fetched) == 1, "one record batch of the five"
        # 0 and 1 handled, 2 taken out and running again, 3 and 4 behind it: five records,
        # none written back (the batch waits for 3 and 4).
        assert receiver.health()["actions"]["a"]["in_flight"] == 5
        gate.set()
        await eventually(
            lambda: receiver.health()["actions"]["a"]["in_flight"] == 0,
            within=10,
            what="every record settled",
        )
        assert calls == [0, 1, 2, 2, 3, 4]
    finally:
        await receiver.close()
        await driver.close()
