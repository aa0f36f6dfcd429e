"""The Kafka driver's less travelled paths: a user's own librdkafka statistics callback, a
commit refused while partitions move, a subscribe cancelled or overtaken by close, a
publish waiting for room at close, headers confluent-kafka cannot read."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from member_helpers import new_member

from hexa_event.driver import PairHeaders, RawRecord, SubscriptionSpec
from hexa_event.drivers.kafka import KafkaDriver, KafkaOptions
from hexa_event.drivers.kafka.consumer import KafkaSubscription
from hexa_event.drivers.kafka.offsets import PartitionState
from hexa_event.drivers.kafka.producer import KafkaProducer
from hexa_event.errors import ClosedError, DriverError
from hexa_event.testing.waiting import eventually

_NOWHERE = "127.0.0.1:1"
"""A bootstrap address nothing listens on: consumers start and never join a group."""


def _consumer_threads(group: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"hexa-kafka-consumer-{group}"]


# -- a user's own stats_cb ---------------------------------------------------------------------


async def test_a_users_stats_cb_still_lets_health_see_the_brokers_answer(
    kafka_bootstrap: str,
) -> None:
    """With ``stats_cb`` in the config, the driver's statistics rules were off: an outage
    (every broker down) ended only when records flowed, so an idle subscription stayed
    unhealthy after the brokers were back. Both callbacks are called now."""
    tag = uuid.uuid4().hex[:8]
    theirs: list[str] = []
    driver = KafkaDriver(
        bootstrap_servers=kafka_bootstrap,
        partitions=1,
        consumer_config={"stats_cb": theirs.append, "statistics.interval.ms": 300},
    )
    try:
        sub = await driver.subscribe(SubscriptionSpec(group=f"st-{tag}", channels=(f"st-{tag}",)))
        assert isinstance(sub, KafkaSubscription)
        (member,) = sub._members
        member.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
        assert member.all_down
        assert "_ALL_BROKERS_DOWN" in sub.status().error
        # No record flows: only the statistics can tell that the brokers answer.
        await eventually(lambda: not sub.status().error, within=15, what="health clean again")
        assert not member.all_down
        assert theirs, "the user's stats_cb was not called"
    finally:
        await driver.close()


# -- an outage is not a fetch stall -------------------------------------------------------------


class _Positions:
    """What ``Member._measure_lag`` asks: a position, and no fetch answer (no cached end)."""

    def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, 50) for tp in tps]

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool) -> tuple[int, int]:
        return 0, -1001


async def test_an_outage_is_not_reported_as_a_fetch_stall(caplog: pytest.LogCaptureFixture) -> None:
    """While every broker was down, librdkafka forgets the partitions' ends: 10 s into any
    outage each member logged that it "fetches nothing although it holds them and takes
    records", and health had the stall under the outage's error. The outage is the
    reason: the stall clock starts once the brokers answer."""
    loop = asyncio.get_running_loop()
    sub = KafkaSubscription(KafkaOptions(), SubscriptionSpec(group="g", channels=("t",)), None)
    sub._loop = loop
    member = new_member(loop, sub)
    sub._members.append(member)
    member._owned = {("t", 0)}
    consumer: Any = _Positions()
    member.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    for now in (100.0, 105.0, 111.0, 130.0):
        member._measure_lag(consumer, now=now)
    assert member.fetch_problem() is None
    assert "fetches nothing" not in caplog.text
    member._answered()  # the brokers answer, and still nothing comes: a stall
    for now in (131.0, 141.0):
        member._measure_lag(consumer, now=now)
    assert "fetches nothing" in (member.fetch_problem() or "")


# -- a commit refused while partitions move ----------------------------------------------------


class _Committer:
    """A stand-in consumer whose commits are refused with ``code`` (None: written)."""

    def __init__(self, code: int | None) -> None:
        self.code = code
        self.written: list[tuple[str, int, int]] = []

    def commit(self, offsets: Any, asynchronous: bool) -> list[Any]:
        if self.code is not None:
            raise KafkaException(KafkaError(self.code, "refused"))
        self.written.extend((tp.topic, tp.partition, tp.offset) for tp in offsets)
        return list(offsets)


@pytest.mark.parametrize(
    "code",
    [KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID],
)
async def test_a_commit_refused_while_partitions_move_is_written_again(code: int) -> None:
    """A commit refused for a rebalance was taken as written: a partition the member kept
    was not committed again until a later record moved it (on an idle topic, never: the
    handled records came again after a restart, and the lag never reached 0). Now such a
    commit is sent again, and it is no error for the user."""
    loop = asyncio.get_running_loop()
    sub = KafkaSubscription(KafkaOptions(), SubscriptionSpec(group="g", channels=("t",)), None)
    sub._loop = loop
    member = new_member(loop, sub)
    sub._members.append(member)
    member._owned.add(("t", 0))
    sub.on_assigned(member, [("t", 0, 5, "")])
    state = sub._partitions[("t", 0)]
    assert isinstance(state, PartitionState)
    state.next_offset = 6
    state.offsets.append(5)
    state.complete(5)  # record 5 handled: the position to commit is 6
    sub._dirty.add(state)
    sub._send_commit()
    member._run_commands(_Committer(code))  # type: ignore[arg-type]
    await eventually(lambda: sub._committing is None, within=5, what="the commit's outcome")
    assert state.committed == 5, "a refused commit was taken as written"
    await sub.settle([])  # not an error the user sees
    accepting = _Committer(None)
    await eventually(lambda: not member._commands.empty(), within=5, what="the commit again")
    member._run_commands(accepting)  # type: ignore[arg-type]
    await eventually(lambda: state.committed == 6, within=5, what="the position written")
    assert accepting.written == [("t", 0, 6)]


# -- subscribe against close and cancellation --------------------------------------------------


async def test_a_subscribe_cancelled_while_joining_leaves_its_consumer() -> None:
    """A subscribe cancelled while it waited for the group (a receiver's start given up)
    left its consumer thread running in the group for good."""
    group = f"cx-{uuid.uuid4().hex[:8]}"
    driver = KafkaDriver(bootstrap_servers=_NOWHERE, assignment_timeout=60)
    try:
        spec = SubscriptionSpec(group=group, channels=(), pattern="cx-.*")
        task = asyncio.create_task(driver.subscribe(spec))
        await eventually(lambda: bool(_consumer_threads(group)), within=10, what="a consumer")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await eventually(lambda: not _consumer_threads(group), within=10, what="its end")
    finally:
        await driver.close()


async def test_a_subscribe_overtaken_by_close_raises_closed_and_leaves() -> None:
    """A driver closed while a subscribe waited for the group returned a subscription that
    closed driver never closed: its consumer stayed in the group (holding partitions no
    other member got) for good."""
    group = f"cy-{uuid.uuid4().hex[:8]}"
    driver = KafkaDriver(bootstrap_servers=_NOWHERE, assignment_timeout=3)
    spec = SubscriptionSpec(group=group, channels=(), pattern="cy-.*")
    task = asyncio.create_task(driver.subscribe(spec))
    await eventually(lambda: bool(_consumer_threads(group)), within=10, what="a consumer")
    await driver.close()
    with pytest.raises(ClosedError):
        await task
    await eventually(lambda: not _consumer_threads(group), within=10, what="its end")


# -- a publish waiting for room in the local queue at close -----------------------------------


async def test_a_publish_waiting_for_room_ends_when_the_producer_closes(
    kafka_bootstrap: str,
) -> None:
    """A publish whose records did not fit librdkafka's local queue waits for room; closed
    meanwhile, it produced the rest after close's flush, and nothing served their reports
    any more: the call waited for ever (a service's shutdown hung)."""
    channel = f"room-{uuid.uuid4().hex[:8]}"
    setup = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=1)
    await setup.provision([channel])
    await setup.close()
    options = KafkaOptions(
        bootstrap_servers=kafka_bootstrap,
        linger_ms=50,
        producer_config={"queue.buffering.max.messages": 1},
    )
    producer = KafkaProducer(options.producer(), error_cb=lambda err: None, scrub=str)
    records = [RawRecord(channel, f"k{i}", {}, b"{}") for i in range(5)]
    task = asyncio.create_task(producer.publish(records))
    await eventually(lambda: producer._pending > 0, within=10, what="a publish waiting for room")
    await producer.close(10)
    started = time.monotonic()
    with pytest.raises(DriverError, match="closed"):
        await asyncio.wait_for(task, 20)
    assert time.monotonic() - started < 20


# -- headers confluent-kafka cannot read -------------------------------------------------------


class _RawName(str):
    """A header name aiokafka's pure-Python record builder writes as these raw bytes."""

    raw = b"x-\xff\xfe"

    def encode(self, *args: Any, **kwargs: Any) -> bytes:
        return self.raw


async def _produce_raw(bootstrap: str, channel: str, records: list[tuple[bytes, Any]]) -> None:
    """Write ``(key, headers)`` records as a foreign producer may: header names as bytes."""
    aiokafka = pytest.importorskip("aiokafka")
    from aiokafka.producer import message_accumulator, producer
    from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy

    with pytest.MonkeyPatch.context() as patch:  # the compiled builder encodes names itself
        for module in (message_accumulator, producer):
            patch.setattr(module, "DefaultRecordBatchBuilder", _DefaultRecordBatchBuilderPy)
        client = aiokafka.AIOKafkaProducer(bootstrap_servers=bootstrap)
        await client.start()
        try:
            for key, headers in records:
                await asyncio.wait_for(
                    client.send_and_wait(channel, b"{}", key=key, headers=headers), 30
                )
        finally:
            await client.stop()


@pytest.mark.parametrize("as_records", [False, True], ids=["deliveries", "record-batches"])
async def test_a_header_name_that_is_not_utf8_does_not_stop_the_partition(
    kafka_bootstrap: str, as_records: bool
) -> None:
    """A record whose header name is not UTF-8 (a foreign producer's): confluent-kafka
    raises reading its headers, and then hands out a broken list (reading that crashed the
    process). The fetch raised, and the record left the buffer without being handed out:
    its partition never committed past it again. Now it comes without headers, as often as
    it is handed out, and the records after it come too."""
    tag = uuid.uuid4().hex[:8]
    channel = f"hdr-{tag}"
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=1)
    try:
        await driver.provision([channel])
        await _produce_raw(
            kafka_bootstrap,
            channel,
            # Records before it: the read of their headers is warm (the interpreter's fast
            # call path passed confluent-kafka's pending error on unchecked).
            [(b"warm", [("x-ok", b"0")])] * 40
            + [(b"bad", [(_RawName("x"), b"v"), ("x-ok", b"1")]), (b"good", [("x-ok", b"2")])],
        )
        spec = SubscriptionSpec(group=f"hdrg-{tag}", channels=(channel,), start="earliest")
        sub = await driver.subscribe(spec)
        bad: list[dict[str, bytes]] = []  # the bad record's headers, each time handed out
        good: dict[str, bytes] | None = None
        async with asyncio.timeout(30):
            while len(bad) < 2 or good is None:
                deliveries: list[Any] = []
                if as_records:  # a record taken out of its batch reads its headers again
                    batch = await sub.fetch_records(10)
                    assert batch is not None
                    for i, key in enumerate(batch.keys):
                        if key == "bad":
                            assert list(batch.headers[i]) == []
                            deliveries.append(batch.take(i))
                        elif key == "good":
                            good = dict(PairHeaders(batch.headers[i]))
                    batch.ack()
                    await sub.settle_records([batch])
                else:
                    deliveries = list(await sub.fetch(10))
                for d in deliveries:
                    if d.record.key != "bad":
                        good = dict(d.record.headers) if d.record.key == "good" else good
                        d.ack()
                        continue
                    bad.append(dict(d.record.headers))
                    if len(bad) == 1:
                        d.nack()  # back once, then handled
                    else:
                        d.ack()
                await sub.settle(deliveries)
        assert bad == [{}, {}]
        assert good == {"x-ok": b"2"}
        await sub.close()
    finally:
        await driver.close()


# -- a topic deleted while in use ---------------------------------------------------------------


async def test_a_topic_deleted_after_it_was_provisioned_is_made_again(kafka_bootstrap: str) -> None:
    """A topic deleted (by an operator) after the driver provisioned it: every later emit
    to it failed (``topic does not exist ... enable provisioning``, with provisioning on)
    until the service restarted. Now the publish after the refusal creates it again."""
    from confluent_kafka.admin import AdminClient

    channel = f"gone-{uuid.uuid4().hex[:8]}"
    driver = KafkaDriver(
        bootstrap_servers=kafka_bootstrap,
        partitions=1,
        delivery_timeout=10,
        producer_config={"topic.metadata.propagation.max.ms": 1000},
    )
    try:
        await driver.publish([RawRecord(channel, "k", {}, b"{}")])
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        await asyncio.wrap_future(admin.delete_topics([channel])[channel])
        await eventually(
            lambda: channel not in admin.list_topics(timeout=5).topics, within=30, what="gone"
        )
        outcomes: list[str] = []
        async with asyncio.timeout(90):
            while not outcomes or outcomes[-1] != "stored":
                try:
                    await driver.publish([RawRecord(channel, "k", {}, b"{}")])
                    outcomes.append("stored")
                except DriverError as exc:
                    outcomes.append(str(exc))
                    assert len(outcomes) < 5, outcomes  # refused once or twice, then made again
        assert any("does not exist" in o for o in outcomes[:-1]), outcomes
    finally:
        await driver.close()
