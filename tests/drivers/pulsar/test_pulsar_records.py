"""The Pulsar driver's record batches (``fetch_records``/``settle_records``) on the real
broker, alone and under a receiver (``hexa_event.fetched``): no delivery object per common
record, a record taken out settled on its own, a nacked batch given back, a failed record
retried alone, close giving back only what was not handled, batch handlers over records."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import pulsar
import pytest

import hexa_event as he
from hexa_event.driver import PairHeaders, RawRecord, RecordBatch, SubscriptionSpec
from hexa_event.drivers.pulsar import PulsarDriver, PulsarSubscriptionOptions
from hexa_event.drivers.pulsar import consumer as pulsar_consumer
from hexa_event.drivers.pulsar.consumer import PulsarSubscription
from hexa_event.errors import AlreadySettledError
from hexa_event.testing.waiting import eventually

pytestmark = pytest.mark.pulsar

MakeDriver = Callable[..., Awaitable[PulsarDriver]]


def _names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:10]
    return f"pr-{tag}", f"pr-{tag}"


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many record batches and deliveries the Pulsar driver made."""
    counts = {"batches": 0, "deliveries": 0}
    batch_init = pulsar_consumer.PulsarRecordBatch.__init__
    delivery_init = pulsar_consumer.PulsarDelivery.__init__

    def batch(self: Any, *args: Any) -> None:
        counts["batches"] += 1
        batch_init(self, *args)

    def delivery(self: Any, *args: Any) -> None:
        counts["deliveries"] += 1
        delivery_init(self, *args)

    monkeypatch.setattr(pulsar_consumer.PulsarRecordBatch, "__init__", batch)
    monkeypatch.setattr(pulsar_consumer.PulsarDelivery, "__init__", delivery)
    return counts


async def _fetch(sub: PulsarSubscription, n: int) -> list[RecordBatch]:
    batches: list[RecordBatch] = []
    async with asyncio.timeout(30):
        while sum(map(len, batches)) < n:
            batch = await sub.fetch_records(n - sum(map(len, batches)))
            assert batch is not None
            batches.append(batch)
    return batches


def _seqs(batches: list[RecordBatch]) -> list[int]:
    return [int(PairHeaders(h)["seq"]) for b in batches for h in b.headers]


async def test_record_batches_ack_what_is_not_taken_out_and_give_back_a_nack(
    make_driver: MakeDriver,
) -> None:
    channel, group = _names()
    driver = await make_driver()
    options = PulsarSubscriptionOptions(nack_delay=0.1)
    spec = SubscriptionSpec(group=group, channels=(channel,), options=options)
    await driver.provision([channel])
    records = [RawRecord(channel, "k", {"seq": str(i).encode()}, b"x") for i in range(20)]
    await driver.publish(records)
    sub = await driver.subscribe(spec)
    assert isinstance(sub, PulsarSubscription)
    batches = await _fetch(sub, 20)
    assert _seqs(batches) == list(range(20))
    first = batches[0]
    assert first.keys[0] == "k"
    assert first.channels[0] == channel
    assert first.bodies[0] == b"x"
    assert isinstance(first.natives[0], pulsar.Message)
    assert first.timestamp(0) is not None
    index = min(5, len(first) - 1)
    taken = first.take(index)
    assert taken.record.headers["seq"] == str(index).encode()
    assert taken.coordinates.startswith(channel)
    with pytest.raises(IndexError):
        first.take(index)
    for batch in batches:
        batch.ack()
    await sub.settle_records(batches)
    await sub.settle_records(batches)  # applied again: harmless
    with pytest.raises(AlreadySettledError):
        first.ack()

    # A nacked batch comes back (after the nack delay), counted again.
    await driver.publish(
        [RawRecord(channel, "k", {"seq": str(i).encode()}, b"x") for i in (20, 21)]
    )
    again = await _fetch(sub, 2)
    assert _seqs(again) == [20, 21]
    for batch in again:
        batch.nack()
    await sub.settle_records(again)
    back = await _fetch(sub, 2)
    assert sorted(_seqs(back)) == [20, 21]
    delivery = back[0].take(0)
    assert delivery.delivery_count == 2
    delivery.ack()
    await sub.settle([delivery])
    for batch in back:
        batch.ack()
    await sub.settle_records(back)
    await sub.close()

    # Only the record taken out and never settled comes to the next member.
    sub = await driver.subscribe(spec)
    assert isinstance(sub, PulsarSubscription)
    [rest] = await _fetch(sub, 1)
    assert _seqs([rest]) == [index]
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.5):
            await sub.fetch_records(10)
    await sub.close()


async def _emit(driver: PulsarDriver, channel: str, pairs: list[tuple[str, int]]) -> None:
    await driver.provision([channel])
    await he.Emitter(driver).emit_many(he.Event(channel, key, {"n": n}) for key, n in pairs)


async def test_common_records_build_no_delivery_and_keep_key_order(
    make_driver: MakeDriver, made: dict[str, int]
) -> None:
    channel, action = _names()
    driver = await make_driver()
    pairs = [(f"k{n % 7}", n) for n in range(300)]
    seen: dict[str, list[int]] = defaultdict(list)
    await _emit(driver, channel, pairs)
    receiver = he.Receiver(driver, name=action)

    @receiver.subscribe(channel, action=action, concurrency=4)
    async def handle(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
        assert ctx.event_id == msg.id
        assert msg.headers[he.envelope.EVENT_ID] == msg.id.encode()
        assert isinstance(msg.native, pulsar.Message)
        seen[msg.key].append(msg.payload["n"])

    async with receiver:
        await eventually(lambda: sum(map(len, seen.values())) == 300, within=60)
    for key, numbers in seen.items():
        assert numbers == [n for k, n in pairs if k == key]  # in order, once each
    assert made["batches"] > 0
    assert made["deliveries"] == 0  # every record went to its handler without a delivery


async def _read_to_end(driver: PulsarDriver, channel: str, action: str) -> list[int]:
    """What a second receiver of ``action`` reads up to an end marker emitted now."""
    await _emit(driver, channel, [("end", -1)])
    again: list[int] = []
    second = he.Receiver(driver, name=action)

    @second.subscribe(channel, action=action)
    async def handle_again(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
        again.append(msg.payload["n"])

    async with second:
        await eventually(lambda: -1 in again, within=60)
    return again


async def test_a_failed_record_is_retried_alone_and_the_others_once(
    make_driver: MakeDriver, made: dict[str, int]
) -> None:
    channel, action = _names()
    driver = await make_driver()
    pairs = [(f"k{n % 5}", n) for n in range(100)]
    calls: dict[int, int] = defaultdict(int)
    await _emit(driver, channel, pairs)
    receiver = he.Receiver(driver, name=action)

    @receiver.subscribe(
        channel, action=action, retry=he.RetryPolicy(max_retries=2, initial_delay=0.1)
    )
    async def handle(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
        n = msg.payload["n"]
        calls[n] += 1
        if n == 42 and msg.attempt == 1:
            raise RuntimeError("first try of 42 fails")

    async with receiver:
        await eventually(lambda: len(calls) == 100 and calls[42] == 2, within=60)
        counters = receiver.health()["actions"][action]
        await eventually(lambda: receiver.health()["actions"][action]["retried"] == 1)
        assert counters["failed"] == 1
    assert made["batches"] > 0
    assert await _read_to_end(driver, channel, action) == [-1]  # nothing again
    assert {n: c for n, c in calls.items() if c != 1} == {42: 2}


async def test_close_gives_back_only_the_records_not_handled(
    make_driver: MakeDriver, made: dict[str, int]
) -> None:
    channel, action = _names()
    driver = await make_driver()
    pairs = [("slow" if n % 10 == 3 else f"k{n % 4}", n) for n in range(80)]
    handled: list[int] = []
    slow_started = asyncio.Event()
    await _emit(driver, channel, pairs)
    receiver = he.Receiver(driver, name=action, drain_timeout=0.5)

    @receiver.subscribe(channel, action=action, concurrency=8)
    async def handle(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
        if msg.key == "slow":
            slow_started.set()
            await asyncio.Event().wait()  # until close cancels it
        handled.append(msg.payload["n"])

    await receiver.start()
    others = {n for k, n in pairs if k != "slow"}
    await eventually(lambda: others <= set(handled), within=60)
    await asyncio.wait_for(slow_started.wait(), 30)
    await receiver.close()
    assert set(handled) == others
    assert made["batches"] > 0
    slow = [n for k, n in pairs if k == "slow"]
    assert await _read_to_end(driver, channel, action) == [*slow, -1]  # in order, only those


async def test_a_batch_handler_reads_record_batches(
    make_driver: MakeDriver, made: dict[str, int]
) -> None:
    channel, action = _names()
    driver = await make_driver()
    pairs = [(f"k{n % 3}", n) for n in range(120)]
    seen: list[int] = []
    failed = False
    await _emit(driver, channel, pairs)
    receiver = he.Receiver(driver, name=action)

    @receiver.subscribe(channel, action=action, batch=he.Batch(50, 0.05))
    async def handle(ctx: he.Context, msgs: list[he.Message[dict[str, int]]]) -> None:
        nonlocal failed
        if not failed:  # the first batch fails once: its records come again
            failed = True
            raise RuntimeError("first batch fails")
        seen.extend(msg.payload["n"] for msg in msgs)

    async with receiver:
        await eventually(lambda: set(seen) == {n for _, n in pairs}, within=60)
    assert made["batches"] > 0
    assert await _read_to_end(driver, channel, action) == [-1]
