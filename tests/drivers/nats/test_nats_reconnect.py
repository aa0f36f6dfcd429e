"""Reconnects and other disruptions of a member's pull, on the real server.

A reconnect is noticed twice, in either order: by the first delivery on the new connection
(nats-py delivers before it runs the driver's reconnect callback) and by the callback. It
is one disruption, so only the first gap after it may be deliveries lost in transit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from nats_helpers import TEST_OPTIONS, nats_url
from nats_proxy import LosingProxy
from own_server import OwnNatsServer

from hexa_event.driver import Delivery, RawRecord, Subscription, SubscriptionSpec
from hexa_event.drivers.nats import NatsDriver, NatsSubscriptionOptions
from hexa_event.drivers.nats.consumer import NatsSubscription, _instant
from hexa_event.drivers.nats.streams import PRIORITY_GROUP, JetStreamApi, JetStreamApiError
from hexa_event.testing.waiting import eventually

pytestmark = pytest.mark.nats


def names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:10]
    return f"nr-{tag}", f"grp-{tag}"


def record(channel: str, n: int) -> RawRecord:
    headers = {"HEXA_EVENT_ID": uuid.uuid4().hex.encode()}
    return RawRecord(channel, "k", headers, json.dumps({"n": n}).encode())


def number(delivery: Delivery) -> int:
    return int(json.loads(delivery.record.body)["n"])


@pytest.fixture
async def drivers(nats_server: str) -> AsyncIterator[list[NatsDriver]]:
    made: list[NatsDriver] = []
    yield made
    for driver in made:
        await driver.close()


def make(made: list[NatsDriver], url: str | None = None, **options: Any) -> NatsDriver:
    driver = NatsDriver.from_url(url or nats_url(), **{**TEST_OPTIONS, **options})
    made.append(driver)
    return driver


async def fetch_n(sub: Subscription, count: int, within: float = 20.0) -> list[Delivery]:
    got: list[Delivery] = []
    async with asyncio.timeout(within):
        while len(got) < count:
            got.extend(await sub.fetch(count - len(got)))
    return got


async def ack_all(sub: Subscription, deliveries: Sequence[Delivery]) -> None:
    for d in deliveries:
        d.ack()
    await sub.settle(deliveries)


async def test_a_reconnect_noticed_twice_does_not_take_another_member_s_deliveries_for_lost(
    drivers: list[NatsDriver], caplog: pytest.LogCaptureFixture
) -> None:
    """Failover member A reconnects; a delivery arrives on the new connection before the
    driver's reconnect callback runs. Then the pin moves to member B, which takes records
    3 and 4, and back to A: record 5 comes to A with a gap in the consumer sequence that
    is B's deliveries, not a loss, so it is handed out at once and health says nothing."""
    channel, group = names()
    ack_wait = 10.0
    options = NatsSubscriptionOptions(ack_wait=ack_wait, heartbeat=0.5, failover=True)
    spec = SubscriptionSpec(group=group, channels=(channel,), options=options, prefetch=1)
    emitter = make(drivers)
    await emitter.provision([channel])
    async with LosingProxy(nats_url()) as proxy:
        a_driver = make(drivers, proxy.url, reconnect_wait=0.1)
        arrived, renewed = asyncio.Event(), asyncio.Event()
        callback = a_driver._on_reconnected

        async def late_callback() -> None:  # runs after a delivery on the new connection
            await arrived.wait()
            await callback()
            renewed.set()

        a_driver._on_reconnected = late_callback  # type: ignore[method-assign]
        a = await a_driver.subscribe(spec)
        assert isinstance(a, NatsSubscription)
        b = await make(drivers).subscribe(dataclasses.replace(spec, prefetch=10))
        await emitter.publish([record(channel, 1)])
        [one] = await fetch_n(a, 1)  # A is pinned
        await ack_all(a, [one])

        proxy.cut()
        await eventually(lambda: proxy.connections >= 2, within=30, what="a reconnect")
        await emitter.publish([record(channel, 2)])
        [two] = await fetch_n(a, 1, within=30)  # on the new connection, callback held
        assert number(two) == 2
        arrived.set()
        await asyncio.wait_for(renewed.wait(), 30)  # A holds record 2: A pulls no more

        # The pin moves to B (as after A's pin expired), which takes records 3 and 4.
        assert emitter._nc is not None
        api = JetStreamApi(emitter._nc, 5.0)
        await api.request(f"CONSUMER.UNPIN.HEXA_TEST.{group}", {"group": PRIORITY_GROUP})
        await emitter.publish([record(channel, 3), record(channel, 4)])
        got = await fetch_n(b, 2)
        assert [number(d) for d in got] == [3, 4]
        await ack_all(b, got)
        await b.close()  # unpins: A takes over

        caplog.set_level(logging.INFO, logger="hexa_event.drivers.nats")
        await ack_all(a, [two])
        await emitter.publish([record(channel, 5)])
        began = time.monotonic()
        problems: list[str] = []

        async def watch() -> None:
            while True:
                problems.append(a.status().error)
                await asyncio.sleep(0.1)

        watching = asyncio.create_task(watch())
        try:
            [five] = await fetch_n(a, 1, within=ack_wait + 20)
        finally:
            watching.cancel()
        took = time.monotonic() - began
        assert number(five) == 5
        assert not [p for p in problems if "lost in transit" in p], problems
        assert "lost in transit" not in caplog.text
        assert took < ack_wait / 2, f"record 5 was held {took:.1f}s"
        await ack_all(a, [five])


@pytest.mark.parametrize("check", ["lag", "consumer"])
async def test_a_check_lost_with_the_connection_does_not_hold_up_the_pulls_after_it(
    own_nats: OwnNatsServer, drivers: list[NatsDriver], check: str
) -> None:
    """The link goes silent while the member's lag check, or its consumer check after
    missed heartbeats, waits for its answer; the server restarts (its waiting pulls are
    gone) and the client reconnects. The member pulls on the new connection at once: a
    record published then arrives long before the lost check's request_timeout (the
    check ran inline in the pull loop, which waited for it before pulling again)."""
    channel, group = names()
    request_timeout = 20.0
    # A heartbeat of 10 s: the lag check (every loop round) is sent before a missing
    # heartbeat makes the member check its consumer (after 20.5 s); of 0.5 s: the
    # consumer check is sent 1.5 s after the last heartbeat.
    heartbeat = 10.0 if check == "lag" else 0.5
    options = NatsSubscriptionOptions(ack_wait=60.0, heartbeat=heartbeat)
    spec = SubscriptionSpec(group=group, channels=(channel,), options=options)
    async with LosingProxy(own_nats.url) as proxy:
        driver = make(drivers, proxy.url, reconnect_wait=0.1, request_timeout=request_timeout)
        sub = await driver.subscribe(spec)
        try:
            proxy.stall()
            if check == "consumer":  # the pull loop checks the consumer right after this
                await eventually(
                    lambda: "no heartbeat" in sub.status().error, within=30, what="no heartbeat"
                )
            await eventually(
                lambda: b"CONSUMER.INFO" in proxy.swallowed, within=30, what="a check sent"
            )
            own_nats.kill()
            await own_nats.start()
            proxy.cut()
            await eventually(lambda: proxy.connections >= 2, within=30, what="a reconnect")
            await make(drivers, own_nats.url).publish([record(channel, 1)])
            began = time.monotonic()
            [one] = await fetch_n(sub, 1, within=request_timeout + 20)
            took = time.monotonic() - began
            assert number(one) == 1
            assert took < request_timeout / 2, f"the first record came after {took:.1f}s"
            await ack_all(sub, [one])
        finally:
            await driver.close()  # through the proxy, while it runs


async def test_pulls_that_get_no_heartbeat_keep_the_member_unhealthy_until_one_comes(
    drivers: list[NatsDriver],
) -> None:
    """Nothing the server sends to the member's inbox arrives (its API answers still do):
    health says so from the first missed heartbeats until a heartbeat comes again, also
    after the member checked its consumer and pulled again (it said healthy then)."""
    channel, group = names()
    options = NatsSubscriptionOptions(heartbeat=0.5)
    spec = SubscriptionSpec(group=group, channels=(channel,), options=options)
    async with LosingProxy(nats_url()) as proxy:
        driver = make(drivers, proxy.url)
        sub = await driver.subscribe(spec)
        assert isinstance(sub, NatsSubscription)
        try:
            proxy.muted.add(sub._inbox.encode())
            await eventually(
                lambda: "no heartbeat" in sub.status().error, within=10, what="no heartbeat"
            )
            until = time.monotonic() + 4  # rounds of checking the consumer, pulling again
            while time.monotonic() < until:
                assert "no heartbeat" in sub.status().error, sub.status()
                await asyncio.sleep(0.02)
            proxy.muted.clear()
            await eventually(lambda: sub.status().error == "", within=10, what="healthy again")
        finally:
            await driver.close()  # through the proxy, while it runs


@pytest.mark.parametrize("failover", [False, True], ids=["shared", "failover"])
async def test_health_clears_at_once_when_silent_pulls_are_answered_again(
    drivers: list[NatsDriver], failover: bool
) -> None:
    """The member's pulls got no heartbeat; the link heals right after it pulled again.
    Health clears within a second, not at that pull's first heartbeat (4 s here: a pull
    made while its pulls were silent is answered at once)."""
    channel, group = names()
    options = NatsSubscriptionOptions(heartbeat=4.0, failover=failover)
    spec = SubscriptionSpec(group=group, channels=(channel,), options=options)
    async with LosingProxy(nats_url()) as proxy:
        driver = make(drivers, proxy.url)
        sub = await driver.subscribe(spec)
        assert isinstance(sub, NatsSubscription)
        try:
            proxy.muted.add(sub._inbox.encode())
            await eventually(
                lambda: "no heartbeat" in sub.status().error, within=30, what="no heartbeat"
            )
            # The member checks its consumer and pulls again now; that pull's first
            # heartbeat would come 4 s later.
            await asyncio.sleep(0.2)
            proxy.muted.clear()
            healed = time.monotonic()
            await eventually(lambda: sub.status().error == "", within=10, what="healthy again")
            took = time.monotonic() - healed
            assert took < 2.0, f"health cleared {took:.1f}s after the link healed"
        finally:
            await driver.close()  # through the proxy, while it runs


# -- what an operator does under a running member ---------------------------------------------


async def test_a_consumer_deleted_under_a_running_member_resumes_where_it_was(
    drivers: list[NatsDriver],
) -> None:
    """A group that starts at the latest record: its consumer is deleted (an operator, or
    the server's inactive threshold during a long disconnect) while records wait for it.
    The member creates it again where the group was, not at the latest record: nothing is
    lost (the record it held may come again)."""
    channel, group = names()
    spec = SubscriptionSpec(group=group, channels=(channel,), start="latest", prefetch=1)
    driver = make(drivers)
    sub = await driver.subscribe(spec)
    await driver.publish([record(channel, 1)])
    [one] = await fetch_n(sub, 1)  # held: with prefetch 1 the member pulls no more
    await driver.publish([record(channel, n) for n in range(2, 6)])
    assert driver._nc is not None
    api = JetStreamApi(driver._nc, 5.0)
    await api.request(f"CONSUMER.DELETE.HEXA_TEST.{group}")
    await ack_all(sub, [one])  # the member pulls again: no consumer answers
    seen: list[int] = []
    async with asyncio.timeout(30):
        while not {2, 3, 4, 5} <= set(seen):
            got = await sub.fetch(10)
            seen.extend(number(d) for d in got)
            await ack_all(sub, got)
    assert sorted(set(seen)) in ([1, 2, 3, 4, 5], [2, 3, 4, 5]), seen


async def test_a_consumer_deleted_while_the_member_pulls_nothing_is_made_again(
    drivers: list[NatsDriver],
) -> None:
    """The member holds its whole prefetch (a long handler), so no pull tells it that its
    consumer was deleted: its lag check does, and it creates the consumer again at once
    (records published meanwhile wait for the group in it)."""
    channel, group = names()
    spec = SubscriptionSpec(group=group, channels=(channel,), start="latest", prefetch=1)
    driver = make(drivers)
    sub = await driver.subscribe(spec)
    await driver.publish([record(channel, 1)])
    [one] = await fetch_n(sub, 1)  # held
    assert driver._nc is not None
    api = JetStreamApi(driver._nc, 5.0)
    await api.request(f"CONSUMER.DELETE.HEXA_TEST.{group}")

    async def exists() -> bool:
        try:
            await api.consumer_info("HEXA_TEST", group)
        except JetStreamApiError:
            return False
        return True

    for _ in range(100):  # 20 s; a lag check every 5 s
        if await exists():
            break
        await asyncio.sleep(0.2)
    else:
        pytest.fail("the consumer was not made again")
    await driver.publish([record(channel, 2)])
    await ack_all(sub, [one])
    seen: list[int] = []
    async with asyncio.timeout(30):
        while 2 not in seen:
            got = await sub.fetch(10)
            seen.extend(number(d) for d in got)
            await ack_all(sub, got)


async def test_a_stream_deleted_and_made_again_under_a_running_member_loses_nothing(
    drivers: list[NatsDriver],
) -> None:
    """The operator deletes the stream and makes it again; records go into the new one
    (numbered from 1 again) before the member notices. Its consumer, gone with the old
    stream, is made again at the new stream's start, not where the old one was."""
    channel, group = names()
    tag = uuid.uuid4().hex[:8]
    own = {"stream": f"HEXA_RC_{tag}", "subject_prefix": f"hexa-rc-{tag}"}
    spec = SubscriptionSpec(group=group, channels=(channel,), start="latest", prefetch=1)
    driver = make(drivers, **own)
    emitter = make(drivers, **own)
    sub = await driver.subscribe(spec)
    await emitter.publish([record(channel, n) for n in range(1, 11)])
    for _ in range(9):
        await ack_all(sub, await fetch_n(sub, 1))
    [ten] = await fetch_n(sub, 1)  # held: the member pulls no more
    assert number(ten) == 10
    assert emitter._nc is not None
    api = JetStreamApi(emitter._nc, 5.0)
    config = (await api.request(f"STREAM.INFO.{own['stream']}"))["config"]
    try:
        await api.request(f"STREAM.DELETE.{own['stream']}")
        await api.request(f"STREAM.CREATE.{own['stream']}", config)
        await emitter.publish([record(channel, n) for n in range(11, 14)])  # seqs 1-3
        await ack_all(sub, [ten])  # the member pulls again: no consumer answers
        seen: list[int] = []
        async with asyncio.timeout(30):
            while not {11, 12, 13} <= set(seen):
                got = await sub.fetch(10)
                seen.extend(number(d) for d in got)
                await ack_all(sub, got)
        assert seen == [11, 12, 13]
    finally:
        await sub.close()
        await api.request(f"STREAM.DELETE.{own['stream']}")


def test_server_times_order_like_the_times() -> None:
    """Go trims a fraction's trailing zeros: 17.07 is later than 17.069999999."""
    assert _instant("2026-12-07T00:16:17.07Z") > _instant("2026-12-07T00:16:17.069999999Z")  # type: ignore[operator]
    assert _instant("2026-12-07T00:16:18Z") > _instant("2026-12-07T00:16:17.9Z")  # type: ignore[operator]
    for bad in (None, 7, "", "2026-12-07T00:16:17.07", "2026-12-07T00:16:17.²Z", "x" * 99):
        assert _instant(bad) is None


# -- pulls the consumer refuses ------------------------------------------------------------------


async def test_a_consumer_with_a_lower_max_batch_gets_smaller_pulls(
    drivers: list[NatsDriver],
) -> None:
    """The consumer's ``max_batch`` (set in consumer_config or on the server) is below the
    member's batch: the server refuses each pull (409 Exceeded MaxRequestBatch). Before,
    the member pulled again at once, thousands of times a second, receiving nothing and
    reporting nothing; now it pulls at most that many at a time."""
    channel, group = names()
    options = NatsSubscriptionOptions(consumer_config={"max_batch": 5})
    driver = make(drivers)
    sub = await driver.subscribe(
        SubscriptionSpec(group=group, channels=(channel,), options=options)
    )
    await driver.publish([record(channel, n) for n in range(20)])
    assert driver._nc is not None
    before = driver._nc.stats["out_msgs"]
    got = await fetch_n(sub, 20)
    await ack_all(sub, got)
    assert sorted(number(d) for d in got) == list(range(20))
    assert driver._nc.stats["out_msgs"] - before < 200  # pulls and acks, no storm
    assert sub.status().error == ""


async def test_pulls_the_consumer_refuses_are_reported_not_repeated_at_once(
    drivers: list[NatsDriver],
) -> None:
    """The consumer's ``max_expires`` is below the member's pull lifetime: every pull is
    refused (409 Exceeded MaxRequestExpires). The member says so in its status, naming
    what to change, and asks again only after a pause."""
    channel, group = names()
    options = NatsSubscriptionOptions(consumer_config={"max_expires": 1_000_000_000})
    driver = make(drivers)
    sub = await driver.subscribe(
        SubscriptionSpec(group=group, channels=(channel,), options=options)
    )
    assert driver._nc is not None
    before = driver._nc.stats["out_msgs"]
    await eventually(lambda: "MaxRequestExpires" in sub.status().error, within=10, what="status")
    error = sub.status().error
    assert "refuses" in error, error
    assert "max_expires" in error, error
    # For two seconds (a storm of pulls would send thousands) it stays reported.
    until = time.monotonic() + 2
    while time.monotonic() < until:
        assert "MaxRequestExpires" in sub.status().error
        await asyncio.sleep(0.1)
    assert driver._nc.stats["out_msgs"] - before < 20


async def test_pulls_answered_503_while_the_api_answers_are_paused_and_reported(
    drivers: list[NatsDriver],
) -> None:
    """Every pull gets 503 (no responders) while the JetStream API finds the consumer (its
    pulls go to a subject nobody serves). Before, the member checked the consumer and
    pulled again at once, round after round at network speed; now, after the check found
    the consumer and the next pull got 503 too, it pulls again only after a pause, and
    health says so all the while."""
    channel, group = names()
    options = NatsSubscriptionOptions(heartbeat=0.5)
    spec = SubscriptionSpec(group=group, channels=(channel,), options=options)
    driver = make(drivers)
    nc = await driver.connection()
    assert driver._api is not None
    sub = NatsSubscription(driver, nc, driver._api, spec, options, group)
    sub._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.HEXA_TEST.{group}-nobody"
    await sub.start()
    try:
        await eventually(lambda: "503" in sub.status().error, within=10, what="503 reported")
        before = nc.stats["out_msgs"]
        until = time.monotonic() + 3
        said: set[str] = set()
        while time.monotonic() < until:
            error = sub.status().error
            assert "503" in error, sub.status()
            said.add(error)
            await asyncio.sleep(0.02)
        sent = nc.stats["out_msgs"] - before
        assert sent < 40, f"{sent} messages in 3 s: a storm of checks and pulls"
        # Between the pauses it checks the consumer again, and its probes' 503s say so.
        assert any("pausing between pulls" in error for error in said), said
    finally:
        await sub.close()
