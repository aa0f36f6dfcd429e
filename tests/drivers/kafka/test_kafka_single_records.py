"""A single handler on Kafka fed record batches (``hexa_event.fetched``), on the real broker:
no delivery object per common record, one key's events in order, a failed record retried
alone, close giving back only what was not handled, a slow record releasing its batch's
places in the window, and a hanging handler reported by health."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest
from records_helpers import names

import hexa_event as he
from attack_helpers import emit, read_again
from hexa_event.drivers.kafka import KafkaDriver
from hexa_event.drivers.kafka import consumer as kafka_consumer
from hexa_event.testing.waiting import eventually

pytestmark = pytest.mark.kafka


def _names() -> tuple[str, str]:
    return names("ksr")


async def test_common_records_build_no_delivery_and_keep_key_order(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = 0
    delivery_init = kafka_consumer.KafkaDelivery.__init__

    def counting(self: Any, *args: Any) -> None:
        nonlocal built
        built += 1
        delivery_init(self, *args)

    monkeypatch.setattr(kafka_consumer.KafkaDelivery, "__init__", counting)
    topic, action = _names()
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=3)
    pairs = [(f"k{n % 7}", n) for n in range(300)]
    seen: dict[str, list[int]] = defaultdict(list)
    try:
        await emit(driver, topic, pairs)
        receiver = he.Receiver(driver, name=action)

        @receiver.subscribe(topic, action=action, concurrency=4)
        async def handle(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
            assert ctx.event_id == msg.id
            assert ctx.handler_action == action
            assert msg.headers[he.envelope.EVENT_ID] == msg.id.encode()
            seen[msg.key].append(msg.payload["n"])

        async with receiver:
            await eventually(lambda: sum(map(len, seen.values())) == 300, within=60)
            await eventually(lambda: receiver.health()["actions"][action]["lag"] == 0, within=30)
        for key, numbers in seen.items():
            assert numbers == [n for k, n in pairs if k == key]  # in order, once each
        assert built == 0  # every record went to its handler without a delivery object
    finally:
        await driver.close()


async def test_a_failed_record_is_retried_alone_and_the_others_once(kafka_bootstrap: str) -> None:
    topic, action = _names()
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=2)
    pairs = [(f"k{n % 5}", n) for n in range(100)]
    calls: dict[int, int] = defaultdict(int)
    try:
        await emit(driver, topic, pairs)
        receiver = he.Receiver(driver, name=action)

        @receiver.subscribe(
            topic, action=action, retry=he.RetryPolicy(max_retries=2, initial_delay=0.1)
        )
        async def handle(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
            n = msg.payload["n"]
            calls[n] += 1
            if n == 42 and msg.attempt == 1:
                raise RuntimeError("first try of 42 fails")

        async with receiver:
            await eventually(lambda: len(calls) == 100 and calls[42] == 2, within=60)
            await eventually(lambda: receiver.health()["actions"][action]["lag"] == 0, within=30)
            counters = receiver.health()["actions"][action]
            assert counters["failed"] == 1
            assert counters["retried"] == 1
        # A second member of the group reads nothing again: an end marker comes first.
        await emit(driver, topic, [("end", -1)])
        assert await read_again(driver, topic, action, 1) == [-1]
        assert {n: c for n, c in calls.items() if c != 1} == {42: 2}
    finally:
        await driver.close()


async def test_close_gives_back_only_the_records_not_handled(kafka_bootstrap: str) -> None:
    topic, action = _names()
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=1)
    pairs = [("slow" if n % 10 == 3 else f"k{n % 4}", n) for n in range(80)]
    handled: list[int] = []
    slow_started = asyncio.Event()
    try:
        await emit(driver, topic, pairs)
        receiver = he.Receiver(driver, name=action, drain_timeout=0.5)

        @receiver.subscribe(topic, action=action, concurrency=8)
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

        slow = [n for k, n in pairs if k == "slow"]
        again = await read_again(driver, topic, action, len(slow))
        assert again == slow  # given back in order; nothing handled is delivered again
    finally:
        await driver.close()


async def test_slow_records_release_their_batches_places(kafka_bootstrap: str) -> None:
    topic, action = _names()
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=1)
    pairs = [(f"k{n}", n) for n in range(600)]
    slow = {n for _, n in pairs if n % 10 == 0}  # one in ten hangs: in every batch
    handled: set[int] = set()
    go_on = asyncio.Event()
    try:
        await emit(driver, topic, pairs)
        receiver = he.Receiver(driver, name=action)

        @receiver.subscribe(topic, action=action, concurrency=64)
        async def handle(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
            n = msg.payload["n"]
            if n in slow:
                await go_on.wait()
            handled.add(n)

        async with receiver:
            # 60 records hang in 64 handlers: they hold 60 places of the window of 256,
            # not their batches' (which would stop fetching before the end of the topic).
            try:
                await eventually(lambda: len(handled) == len(pairs) - len(slow), within=60)
            finally:
                go_on.set()
            await eventually(lambda: len(handled) == len(pairs), within=30)
            await eventually(lambda: receiver.health()["actions"][action]["lag"] == 0, within=30)
    finally:
        await driver.close()


async def test_a_hanging_record_handler_is_reported_stalled(kafka_bootstrap: str) -> None:
    topic, action = _names()
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=1)
    release = asyncio.Event()
    handled: list[int] = []
    try:
        await emit(driver, topic, [("a", 1), ("b", 2), ("a", 3)])
        receiver = he.Receiver(driver, name=action, stall_timeout=0.5)

        @receiver.subscribe(topic, action=action)
        async def handle(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
            if msg.payload["n"] == 1:
                await release.wait()
            handled.append(msg.payload["n"])

        async with receiver:
            await eventually(lambda: handled == [2], within=60)

            def stalled() -> bool:
                health = receiver.health()
                return not health["healthy"] and "has been unsettled" in health["reason"]

            await eventually(stalled, within=30, what="health reports the hanging handler")
            release.set()
            await eventually(lambda: handled == [2, 1, 3], within=30)
            await eventually(lambda: receiver.health()["healthy"], within=30)
    finally:
        await driver.close()


async def test_a_slow_record_holds_its_own_place_not_its_batchs(kafka_bootstrap: str) -> None:
    """Released a second after its fetch, a batch with a record still running is acked for
    the others: they are written (their partitions' commits move on) and only the slow one
    is in flight, long before the window would run out of room."""
    topic, action = _names()
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=2)
    pairs = [("slow" if n == 0 else f"k{n % 8}", n) for n in range(200)]
    handled: set[int] = set()
    go_on = asyncio.Event()
    try:
        await emit(driver, topic, pairs)
        receiver = he.Receiver(driver, name=action)

        @receiver.subscribe(topic, action=action, concurrency=8)
        async def handle(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
            if msg.payload["n"] == 0:
                await go_on.wait()
            handled.add(msg.payload["n"])

        async with receiver:
            try:
                await eventually(lambda: len(handled) == len(pairs) - 1, within=60)
                await eventually(
                    lambda: receiver.health()["actions"][action]["in_flight"] == 1,
                    within=20,
                    what="only the slow record in flight",
                )
            finally:
                go_on.set()
            await eventually(lambda: len(handled) == len(pairs), within=30)
            await eventually(lambda: receiver.health()["actions"][action]["lag"] == 0, within=30)
    finally:
        await driver.close()
