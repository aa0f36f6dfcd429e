"""The JetStream driver's own promises, checked through the raw contract on the real server."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from nats_helpers import TEST_OPTIONS, nats_url

import hexa_event as he
from hexa_event.driver import Delivery, RawRecord, Subscription, SubscriptionSpec
from hexa_event.drivers.nats import NatsDriver, NatsSubscriptionOptions
from hexa_event.drivers.nats.streams import JetStreamApi
from hexa_event.replay import replay_dead_letters
from hexa_event.retry import RetryPolicy, dead_letter_channel
from hexa_event.testing.waiting import Collector, eventually

pytestmark = pytest.mark.nats


def names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:10]
    return f"nt-{tag}", f"grp-{tag}"


def record(
    channel: str, key: str, n: int, event_id: str | None = None, **extra: bytes
) -> RawRecord:
    headers = {"HEXA_EVENT_ID": (event_id or uuid.uuid4().hex).encode(), **extra}
    return RawRecord(channel, key, headers, json.dumps({"n": n}).encode())


@pytest.fixture
async def drivers(nats_server: str) -> AsyncIterator[list[NatsDriver]]:
    """Drivers made by ``make(drivers)``, all closed at the end."""
    made: list[NatsDriver] = []
    yield made
    for driver in made:
        await driver.close()


def make(made: list[NatsDriver], **options: Any) -> NatsDriver:
    driver = NatsDriver.from_url(nats_url(), **{**TEST_OPTIONS, **options})
    made.append(driver)
    return driver


async def fetch_n(sub: Subscription, count: int, within: float = 20.0) -> list[Delivery]:
    got: list[Delivery] = []
    async with asyncio.timeout(within):
        while len(got) < count:
            got.extend(await sub.fetch(count - len(got)))
    return got


async def nothing_within(sub: Subscription, seconds: float) -> bool:
    try:
        async with asyncio.timeout(seconds):
            await sub.fetch(1)
    except TimeoutError:
        return True
    return False


async def ack_all(sub: Subscription, deliveries: Sequence[Delivery]) -> None:
    for d in deliveries:
        d.ack()
    await sub.settle(deliveries)


async def test_a_resent_event_is_stored_once(drivers: list[NatsDriver]) -> None:
    """The same records published twice (an emit or relay retry) are stored once."""
    driver = make(drivers)
    channel, group = names()
    batch = [record(channel, f"k{i % 3}", i) for i in range(20)]
    await driver.publish(batch)
    await driver.publish(batch)
    assert driver._producer.duplicates == 20
    sub = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
    got = await fetch_n(sub, 20)
    await ack_all(sub, got)
    assert [json.loads(d.record.body)["n"] for d in got] == list(range(20))
    assert await nothing_within(sub, 1.0)


async def test_copies_of_an_event_are_not_taken_for_re_sends(drivers: list[NatsDriver]) -> None:
    """A retry copy, a dead letter and a replay share the event id yet are all stored."""
    driver = make(drivers)
    channel, group = names()
    event_id = uuid.uuid4().hex
    records = [
        record(channel, "k", 0, event_id),
        record(channel, "k", 1, event_id, HEXA_ATTEMPT=b"2"),
        record(channel, "k", 2, event_id, HEXA_ATTEMPT=b"3"),
        record(channel, "k", 3, event_id, HEXA_DEAD_LETTER_REASON=b"poison", HEXA_ATTEMPT=b"1"),
        record(channel, "k", 4, event_id, HEXA_REPLAYED_FROM=b"HEXA-17"),
    ]
    await driver.publish(records)
    await driver.publish(records)
    sub = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
    got = await fetch_n(sub, 5)
    await ack_all(sub, got)
    assert [json.loads(d.record.body)["n"] for d in got] == [0, 1, 2, 3, 4]
    assert await nothing_within(sub, 1.0)


async def test_keys_and_headers_survive_any_bytes(drivers: list[NatsDriver]) -> None:
    """Binary, padded and multi-line values, odd keys: all arrive exactly as sent."""
    driver = make(drivers)
    channel, group = names()
    headers = {
        "bin": b"\xff\xfe\x00raw",
        "padded": b"  spaced  ",
        "lines": b"one\r\ntwo",
        "utf8": "سلام".encode(),
        "empty": b"",
        "HEXA_B64": b"not-ours",
    }
    keys = ["", " lead", "trail ", "مفتاح", "a\nb", "plain"]
    # HEXA_B64 is the driver's own header name: refused.
    with pytest.raises(he.DriverError, match="HEXA_B64"):
        await driver.publish([RawRecord(channel, "k", headers, b"x")])
    del headers["HEXA_B64"]
    await driver.publish([RawRecord(channel, k, headers, b"body") for k in keys])
    sub = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
    got = await fetch_n(sub, len(keys))
    await ack_all(sub, got)
    assert [d.record.key for d in got] == keys
    assert all(dict(d.record.headers) == headers for d in got)
    with pytest.raises(he.DriverError, match="Nats-"):
        await driver.publish([RawRecord(channel, "k", {"Nats-Rollup": b"all"}, b"x")])


async def test_channel_names_with_any_characters_round_trip(drivers: list[NatsDriver]) -> None:
    """Dots, wildcards and spaces in channel names become valid, distinct subjects."""
    driver = make(drivers)
    base, group = names()
    channels = [f"{base}.a", f"{base}..b", f"{base} *>", f"{base}%2E", f"{base}.", f".{base}"]
    await driver.publish([RawRecord(c, "k", {}, c.encode()) for c in channels])
    sub = await driver.subscribe(SubscriptionSpec(group=group, channels=tuple(channels)))
    got = await fetch_n(sub, len(channels))
    await ack_all(sub, got)
    assert sorted(d.record.channel for d in got) == sorted(channels)
    assert all(d.record.body == d.record.channel.encode() for d in got)


async def test_delivery_metadata(drivers: list[NatsDriver]) -> None:
    """Coordinates name stream and sequence; count and time come from the server."""
    driver = make(drivers)
    channel, group = names()
    before = time.time()
    await driver.publish([record(channel, "k", 1)])
    sub = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
    [d] = await fetch_n(sub, 1)
    assert d.coordinates.startswith("HEXA_TEST-")
    assert d.delivery_count == 1
    assert d.timestamp is not None
    assert before - 1 < d.timestamp < time.time() + 1
    assert d.native is not None
    d.nack()
    await sub.settle([d])
    [again] = await fetch_n(sub, 1)
    assert again.coordinates == d.coordinates
    assert again.delivery_count == 2
    await ack_all(sub, [again])


async def test_nack_delay_is_honoured_by_the_server(drivers: list[NatsDriver]) -> None:
    driver = make(drivers)
    channel, group = names()
    await driver.publish([record(channel, "k", 1)])
    sub = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
    [d] = await fetch_n(sub, 1)
    d.nack(1.5)
    nacked_at = time.monotonic()
    await sub.settle([d])
    [again] = await fetch_n(sub, 1)
    assert time.monotonic() - nacked_at >= 1.4
    await ack_all(sub, [again])


async def test_settle_acks_a_batch_and_may_be_repeated(drivers: list[NatsDriver]) -> None:
    driver = make(drivers)
    channel, group = names()
    await driver.publish([record(channel, f"k{i}", i) for i in range(50)])
    sub = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
    got = await fetch_n(sub, 50)
    for d in got:
        d.ack()
    await sub.settle(got)
    await sub.settle(got)  # written twice: harmless
    await sub.close()
    again = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
    assert await nothing_within(again, 1.5)


async def test_long_handlers_keep_their_records(drivers: list[NatsDriver]) -> None:
    """An unsettled delivery is kept in progress past ack_wait: no other member gets it."""
    driver = make(drivers)
    channel, group = names()
    options = NatsSubscriptionOptions(ack_wait=1.5, heartbeat=0.5)
    spec = SubscriptionSpec(group=group, channels=(channel,), options=options)
    await driver.publish([record(channel, "k", 1)])
    first = await driver.subscribe(spec)
    [d] = await fetch_n(first, 1)
    second = await make(drivers).subscribe(spec)
    assert await nothing_within(second, 4.5)  # three ack_waits
    await ack_all(first, [d])
    assert await nothing_within(second, 2.0)


async def test_a_dead_member_s_records_come_back_after_ack_wait(drivers: list[NatsDriver]) -> None:
    """A member that vanishes without closing (its connection dropped) loses nothing."""
    channel, group = names()
    options = NatsSubscriptionOptions(ack_wait=1.5, heartbeat=0.5)
    spec = SubscriptionSpec(group=group, channels=(channel,), options=options)
    dying = make(drivers)
    await dying.publish([record(channel, "k", 1)])
    sub = await dying.subscribe(spec)
    [d] = await fetch_n(sub, 1)
    assert dying._nc is not None
    await dying._nc.close()  # no nak, no in-progress: as if the process died
    survivor = await make(drivers).subscribe(spec)
    [again] = await fetch_n(survivor, 1, within=10)
    assert again.coordinates == d.coordinates
    assert again.delivery_count == 2
    await ack_all(survivor, [again])


async def test_close_gives_unsettled_records_back_at_once(drivers: list[NatsDriver]) -> None:
    channel, group = names()
    spec = SubscriptionSpec(group=group, channels=(channel,))
    driver = make(drivers)
    await driver.publish([record(channel, f"k{i}", i) for i in range(10)])
    first = await driver.subscribe(spec)
    got = await fetch_n(first, 10)
    await ack_all(first, got[:4])
    began = time.monotonic()
    await first.close()
    second = await make(drivers).subscribe(spec)
    rest = await fetch_n(second, 6, within=10)
    assert time.monotonic() - began < 10  # not the 30 s ack_wait
    assert {d.coordinates for d in rest} == {d.coordinates for d in got[4:]}
    await ack_all(second, rest)


async def test_a_key_keeps_its_order_across_a_nack(drivers: list[NatsDriver]) -> None:
    """After a nack, later records of that key wait until the nacked one is acked."""
    driver = make(drivers)
    channel, group = names()
    sub = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
    await driver.publish([record(channel, "k", 1)])
    [first] = await fetch_n(sub, 1)
    first.nack(1.0)
    await sub.settle([first])
    await driver.publish([record(channel, "k", 2), record(channel, "other", 3)])
    [other] = await fetch_n(sub, 1)
    assert json.loads(other.record.body)["n"] == 3  # another key is not held up
    await ack_all(sub, [other])
    [again] = await fetch_n(sub, 1)
    assert json.loads(again.record.body)["n"] == 1
    assert await nothing_within(sub, 0.3)  # k's record 2 waits for record 1's ack
    await ack_all(sub, [again])
    [second] = await fetch_n(sub, 1)
    assert json.loads(second.record.body)["n"] == 2
    await ack_all(sub, [second])


async def test_max_deliver_terminates_instead_of_nacking(drivers: list[NatsDriver]) -> None:
    driver = make(drivers)
    channel, group = names()
    options = NatsSubscriptionOptions(max_deliver=2)
    spec = SubscriptionSpec(group=group, channels=(channel,), options=options)
    await driver.publish([record(channel, "k", 1)])
    sub = await driver.subscribe(spec)
    assert driver._nc is not None
    advisories = await driver._nc.subscribe(
        f"$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.HEXA_TEST.{group}"
    )
    [d] = await fetch_n(sub, 1)
    d.nack()
    await sub.settle([d])
    [d2] = await fetch_n(sub, 1)
    assert d2.delivery_count == 2
    d2.nack()
    await sub.settle([d2])
    advisory = json.loads((await advisories.next_msg(timeout=10)).data)
    assert advisory["stream_seq"] == int(d.coordinates.rpartition("-")[2])
    assert await nothing_within(sub, 1.0)


async def test_delayed_records_wait_in_the_stream(drivers: list[NatsDriver]) -> None:
    """With delayed_publish, a record is delivered at its not_before, not before."""
    driver = make(drivers)
    assert driver.features.delayed_publish
    assert driver.features.delayed_nack
    channel, group = names()
    sub = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
    due = time.time() + 1.5
    late = RawRecord(channel, "k", {"HEXA_EVENT_ID": b"x" + uuid.uuid4().hex.encode()}, b"1")
    await driver.publish([RawRecord(late.channel, late.key, late.headers, late.body, due)])
    [d] = await fetch_n(sub, 1, within=10)
    assert time.time() >= due
    assert d.record.headers == late.headers
    await ack_all(sub, [d])
    off = make(drivers, delayed_publish=False)
    assert not off.features.delayed_publish


async def test_status_reports_the_consumer_and_its_lag(drivers: list[NatsDriver]) -> None:
    driver = make(drivers)
    channel, group = names()
    await driver.publish([record(channel, f"k{i}", i) for i in range(30)])
    sub = await driver.subscribe(
        SubscriptionSpec(group=f"{group}.x", channels=(channel,), prefetch=10)
    )
    status = sub.status()
    assert status.assignment == (f"HEXA_TEST/{group}%2Ex",)
    assert status.error == ""
    await eventually(lambda: sub.status().lag == 30, within=15, what="lag of 30")
    got = await fetch_n(sub, 10)
    await ack_all(sub, got)
    await eventually(lambda: (sub.status().lag or 0) <= 20, within=15, what="lag down")


async def test_group_members_share_one_durable_consumer(drivers: list[NatsDriver]) -> None:
    channel, group = names()
    spec = SubscriptionSpec(group=group, channels=(channel,), prefetch=10)
    emitter = make(drivers)
    await emitter.publish([record(channel, f"k{i}", i) for i in range(200)])
    members = [await make(drivers).subscribe(spec) for _ in range(2)]
    counts = [0, 0]

    async def drain(i: int) -> None:
        while sum(counts) < 200:
            got = await members[i].fetch(10)
            await asyncio.sleep(0.01)
            counts[i] += len(got)
            await ack_all(members[i], got)

    async with asyncio.timeout(30):
        _done, pending = await asyncio.wait(
            [asyncio.create_task(drain(0)), asyncio.create_task(drain(1))],
            return_when=asyncio.FIRST_COMPLETED,
        )
    for task in pending:
        task.cancel()
    assert sum(counts) == 200
    assert min(counts) > 0


async def test_pattern_subscriptions_filter_narrowly(drivers: list[NatsDriver]) -> None:
    driver = make(drivers)
    base, group = names()
    spec = SubscriptionSpec(group=group, channels=(f"x-{base}",), pattern=rf"{base}\.[ab]")
    assert driver.filters(spec) == [f"hexa-test.{base}.>", f"hexa-test.x-{base}"]
    sub = await driver.subscribe(spec)
    await driver.publish(
        [RawRecord(c, "k", {}, b"") for c in (f"{base}.a", f"{base}.c", f"x-{base}", f"{base}.b")]
    )
    got = await fetch_n(sub, 3)
    await ack_all(sub, got)
    assert sorted(d.record.channel for d in got) == sorted([f"{base}.a", f"x-{base}", f"{base}.b"])
    assert await nothing_within(sub, 0.5)


async def test_an_existing_consumer_is_updated_to_the_new_settings(
    drivers: list[NatsDriver],
) -> None:
    driver = make(drivers)
    channel, group = names()
    first = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
    await first.close()
    options = NatsSubscriptionOptions(ack_wait=7, max_ack_pending=5)
    await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,), options=options))
    assert driver._nc is not None
    info = await JetStreamApi(driver._nc, 5).consumer_info("HEXA_TEST", group)
    assert info["config"]["ack_wait"] == 7_000_000_000
    assert info["config"]["max_ack_pending"] == 5


async def test_dead_letters_replay_to_the_action(nats_server: str) -> None:
    """A handler that failed for good gets its events again after a replay."""
    channel, action = names()
    connection = he.connect(nats_server, **TEST_OPTIONS)
    fixed = False
    handled = Collector()
    failed = Collector()
    receiver = connection.receiver("svc")

    @receiver.subscribe(channel, action=action, retry=RetryPolicy(max_retries=1, initial_delay=0.1))
    async def handle(ctx: he.Context, msg: he.Message[Any]) -> None:
        if not fixed:
            failed.add(msg.id)
            raise RuntimeError("bug")
        handled.add((msg.id, ctx.event_id))

    try:
        await receiver.start()
        ids = await connection.emitter().emit_many(
            he.Event(channel, f"k{i}", {"i": i}) for i in range(5)
        )
        await failed.wait_for(10, within=30)  # first run and one retry each
        letters = await connection.subscribe(
            SubscriptionSpec(group=f"{action}-peek", channels=(dead_letter_channel(action),))
        )
        await fetch_n(letters, 5)
        await letters.close()
        fixed = True
        report = await replay_dead_letters(connection, action, idle_timeout=3)
        assert report.replayed == 5
        await handled.wait_for(5, within=30)
        assert {event_id for event_id, _ in handled.items} == set(ids)
    finally:
        await receiver.close()
        await connection.close()


async def test_a_lost_consumer_is_created_again(
    drivers: list[NatsDriver], caplog: pytest.LogCaptureFixture
) -> None:
    """A consumer deleted under a running member (a server that lost its state) comes back.
    The loss is reported in the status while the consumer is made again, and in a warning
    that stays (the status clears within milliseconds, between two polls of this test)."""
    caplog.set_level(logging.WARNING, logger="hexa_event.drivers.nats")
    driver = make(drivers)
    channel, group = names()
    options = NatsSubscriptionOptions(heartbeat=0.5, ack_wait=5)
    sub = await driver.subscribe(
        SubscriptionSpec(group=group, channels=(channel,), start="latest", options=options)
    )
    assert driver._nc is not None
    api = JetStreamApi(driver._nc, 5)
    await api.request(f"CONSUMER.DELETE.HEXA_TEST.{group}")
    await eventually(
        lambda: sub.status().error != "" or f"{group} is gone" in caplog.text,
        within=10,
        what="the loss reported",
    )
    await eventually(lambda: sub.status().error == "", within=15, what="the consumer back")
    await driver.publish([record(channel, "k", 7)])
    [d] = await fetch_n(sub, 1, within=15)
    assert json.loads(d.record.body) == {"n": 7}
    await ack_all(sub, [d])


async def test_max_ack_pending_one_orders_a_group_across_members(
    drivers: list[NatsDriver],
) -> None:
    """With max_ack_pending=1 two members of one group take one key's records in turn."""
    channel, group = names()
    spec = SubscriptionSpec(
        group=group,
        channels=(channel,),
        prefetch=5,
        options=NatsSubscriptionOptions(max_ack_pending=1),
    )
    members = [await make(drivers).subscribe(spec) for _ in range(2)]
    await make(drivers).publish([record(channel, "k", i) for i in range(20)])
    order: list[int] = []
    running: list[int] = []

    async def work(sub: Subscription) -> None:
        while len(order) < 20:
            for delivery in await sub.fetch(5):
                running.append(1)
                assert len(running) == 1, "two records of the group in flight at once"
                await asyncio.sleep(0.005)
                order.append(json.loads(delivery.record.body)["n"])
                running.pop()
                await ack_all(sub, [delivery])

    tasks = [asyncio.create_task(work(m)) for m in members]
    await eventually(lambda: len(order) >= 20, within=30, what="all 20 records")
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert order == list(range(20))


async def test_receiver_keeps_a_long_handler_s_event(nats_server: str) -> None:
    """A handler running past ack_wait is not redelivered to another process."""
    channel, action = names()
    options = NatsSubscriptionOptions(ack_wait=1.5, heartbeat=0.5)
    connections = [he.connect(nats_server, **TEST_OPTIONS) for _ in range(2)]
    runs = Collector()
    receivers = []
    for n, connection in enumerate(connections):
        receiver = connection.receiver(f"svc-{n}")

        async def slow(ctx: he.Context, msg: he.Message[Any]) -> None:
            runs.add(msg.id)
            await asyncio.sleep(5)  # more than three ack_waits

        receiver.subscribe(channel, action=action, options=options, handler=slow)
        await receiver.start()
        receivers.append(receiver)
    try:
        event_id = await connections[0].emitter().emit(he.Event(channel, "k", {}))
        await runs.wait_for(1, within=10)
        await asyncio.sleep(6)  # let it finish; a redelivery would have shown by now
        assert runs.items == [event_id]
    finally:
        for receiver in receivers:
            await receiver.close()
        for connection in connections:
            await connection.close()


@pytest.mark.parametrize("delayed_publish", [True, False])
async def test_retry_copies_wait_in_the_stream_or_come_back_by_nak(
    nats_server: str, delayed_publish: bool
) -> None:
    """A retry copy runs after its back-off: held by the server as a scheduled message
    (delivered once), or without schedules delivered early and nacked for the time left."""
    channel, action = names()
    connection = he.connect(nats_server, delayed_publish=delayed_publish, **TEST_OPTIONS)
    runs = Collector()
    receiver = connection.receiver("svc")

    @receiver.subscribe(channel, action=action, retry=RetryPolicy(max_retries=1, initial_delay=1.5))
    async def flaky(ctx: he.Context, msg: he.Message[Any]) -> None:
        runs.add((msg.attempt, time.monotonic(), msg.native.metadata.num_delivered))
        if msg.attempt == 1:
            raise RuntimeError("once")

    try:
        await receiver.start()
        await connection.emitter().emit(he.Event(channel, "k", {}))
        (first, at1, _), (second, at2, delivered) = await runs.wait_for(2, within=30)
        assert (first, second) == (1, 2)
        assert at2 - at1 >= 1.4
        assert delivered == (1 if delayed_publish else 2)
    finally:
        await receiver.close()
        await connection.close()


def assert_handed_over_in_order(seen: list[int], held: set[int], keys: list[str]) -> None:
    """Per key: what the first member acked, then what it held (given back), then the
    rest in order. The server redelivers given-back records in no set order among
    themselves, so only their place before every later record is checked."""
    for key in keys:
        mine = [n for n in seen if keys[n % 3] == key]
        acked = [n for n in mine if n < min(held)]
        back = [n for n in mine if n in held]
        later = [n for n in mine if n > max(held)]
        assert mine == acked + back + later, f"key {key}: {mine}"
        assert acked == sorted(acked), f"key {key}: {mine}"
        assert later == sorted(later), f"key {key}: {mine}"


async def test_failover_keeps_one_member_active_and_hands_over_in_order(
    drivers: list[NatsDriver],
) -> None:
    """With failover, one member receives; when it closes the standby goes on, key order
    kept across both (the records the first one held come first)."""
    channel, group = names()
    spec = SubscriptionSpec(
        group=group,
        channels=(channel,),
        prefetch=10,
        options=NatsSubscriptionOptions(failover=True, heartbeat=0.5),
    )
    active, standby = [await make(drivers).subscribe(spec) for _ in range(2)]
    keys = ["a", "b", "c"]
    await make(drivers).publish([record(channel, keys[i % 3], i) for i in range(60)])
    first = await fetch_n(active, 10)
    assert await nothing_within(standby, 1.0)  # standing by
    await ack_all(active, first[:4])  # the rest stay unsettled: given back at close
    began = time.monotonic()
    await active.close()
    rest: list[Delivery] = []
    async with asyncio.timeout(20):  # handed over at close, not after 30 s
        while len(rest) < 56:
            batch = await standby.fetch(56 - len(rest))
            await ack_all(standby, batch)
            rest.extend(batch)
    assert time.monotonic() - began < 20
    seen = [json.loads(d.record.body)["n"] for d in (*first[:4], *rest)]
    assert sorted(seen) == list(range(60))
    assert_handed_over_in_order(seen, held=set(range(4, 10)), keys=keys)


async def test_failover_after_a_crash_keeps_key_order(drivers: list[NatsDriver]) -> None:
    """The active member dies without closing: the standby takes over after
    failover_timeout, getting the dead one's records back before later ones."""
    channel, group = names()
    options = NatsSubscriptionOptions(failover=True, ack_wait=2, failover_timeout=3, heartbeat=0.5)
    spec = SubscriptionSpec(group=group, channels=(channel,), prefetch=10, options=options)
    dying, standby_driver = make(drivers), make(drivers)
    active = await dying.subscribe(spec)
    standby = await standby_driver.subscribe(spec)
    keys = ["a", "b", "c"]
    await make(drivers).publish([record(channel, keys[i % 3], i) for i in range(40)])
    first = await fetch_n(active, 10)
    await ack_all(active, first[:4])
    assert active.status().assignment
    assert standby.status().assignment == ()
    assert dying._nc is not None
    await dying._nc.close()  # a crash: no nak, no unpin
    rest: list[Delivery] = []
    async with asyncio.timeout(30):
        while len(rest) < 36:
            batch = await standby.fetch(36 - len(rest))
            await ack_all(standby, batch)
            rest.extend(batch)
    assert standby.status().assignment
    seen = [json.loads(d.record.body)["n"] for d in (*first[:4], *rest)]
    assert sorted(seen) == list(range(40))
    assert_handed_over_in_order(seen, held=set(range(4, 10)), keys=keys)


def test_failover_timeout_must_outlast_ack_wait() -> None:
    with pytest.raises(he.ConfigurationError, match="must exceed ack_wait"):
        NatsSubscriptionOptions(failover=True, ack_wait=10, failover_timeout=5)
    assert NatsSubscriptionOptions(ack_wait=10).takeover_after == 15
