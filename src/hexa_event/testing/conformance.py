"""The conformance suite: the guarantees every driver keeps, checked against the real thing.

Use it from a driver's test module::

    from hexa_event.testing.conformance import DriverConformance

    class TestMemory(DriverConformance):
        async def new_driver(self) -> Driver:
            return hexa_event.connect("memory://conformance")

It includes the contract-level checks of :mod:`hexa_event.testing.contract`.

``new_driver`` must return a fresh driver connected to the same broker or database every time
it is called (several drivers stand for several processes). Checks a driver cannot pass are
skipped from its ``features``. Every test uses its own channels and actions, so the suite
runs on a shared broker; every wait has a deadline (``timeout``, raise it for slow brokers).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from .. import envelope as env
from ..connect import Connection
from ..context import Context, User, UserType
from ..driver import RawRecord
from ..errors import PermanentError
from ..event import Event, Message
from ..retry import RetryPolicy
from .batches import BatchConformance
from .contract import DriverPool
from .lag import LagConformance
from .requests import RequestConformance
from .settling import FAST_RETRY
from .waiting import Collector, eventually


@dataclass
class Order:
    """The payload type of the suite."""

    id: str
    total: int


class DriverConformance(LagConformance, RequestConformance, BatchConformance):
    """Subclass as ``Test<Driver>`` and implement :meth:`new_driver`.

    Runs the contract-level and settle-everything checks it inherits, then everything
    through the public face.
    """

    async def backlog(self, pool: DriverPool, channel: str, count: int, keys: int) -> set[str]:
        """Emit ``count`` events over ``keys`` keys before anyone subscribes; their ids.

        Skips the test on drivers whose new groups do not read history."""
        emitting = await pool.new()
        if not emitting.features.new_group_reads_history:
            pytest.skip(f"{emitting.features.name}: a new group does not read history")
        await emitting.provision([channel])
        events = (Event(channel, f"k{i % keys}", {"i": i}) for i in range(count))
        return set(await emitting.emitter().emit_many(events))

    async def subscribed(
        self, pool: DriverPool, handler: Callable[[Context, Message[Any]], Any]
    ) -> tuple[Connection, str]:
        """A driver and a fresh channel with a started receiver running ``handler``."""
        driver, channel, action = await self.provisioned(pool)
        receiver = driver.receiver("svc")
        receiver.subscribe(channel, action=action, handler=handler)
        await self.started(pool, receiver)
        return driver, channel

    # -- publish / subscribe ---------------------------------------------------------------

    async def test_publish_then_subscribe_gets_everything(self, pool: DriverPool) -> None:
        """Events emitted before the group exists reach it, payload and headers intact."""
        driver = await pool.new()
        if not driver.features.new_group_reads_history:
            pytest.skip(f"{driver.features.name}: a new group does not read history")
        channel, action = self.names()
        count = 50 * self.scale
        await driver.provision([channel])
        events = [
            Event(channel, f"k{i % 7}", Order(f"o{i}", i), headers={"x-seq": str(i)})
            for i in range(count)
        ]
        ids = await driver.emitter().emit_many(events)
        assert len(set(ids)) == count

        got = Collector()
        receiver = (await pool.new()).receiver("svc")

        @receiver.subscribe(channel, action=action, payload=Order)
        async def handle(ctx: Context, msg: Message[Order]) -> None:
            got.add(msg)

        await self.started(pool, receiver)
        messages = await got.wait_for(count, within=self.timeout)
        by_id = {m.id: m for m in messages}
        assert set(by_id) == set(ids)
        for event_id, event in zip(ids, events, strict=True):
            message = by_id[event_id]
            assert message.payload == event.payload
            assert message.key == event.key
            assert message.channel == channel
            assert message.headers["x-seq"] == event.headers["x-seq"].encode()  # type: ignore[union-attr]
            assert message.attempt == 1
            assert message.timestamp is not None

    async def test_topic_isolation(self, pool: DriverPool) -> None:
        """A subscription receives only its own channel's events."""
        driver = await pool.new()
        first, action = self.names()
        second, _ = self.names()
        await driver.provision([first, second])
        got = Collector()
        receiver = driver.receiver("svc")
        receiver.subscribe(first, action=action, handler=lambda ctx, msg: got.add(msg.channel))
        await self.started(pool, receiver)
        emitter = driver.emitter()
        await emitter.emit(Event(second, "k", {"n": 2}))
        await emitter.emit(Event(first, "k", {"n": 1}))
        await got.wait_for(1, within=self.timeout)
        await emitter.emit(Event(first, "k", {"n": 3}))
        await got.wait_for(2, within=self.timeout)
        assert got.items == [first, first]

    async def test_many_channels_concurrently(self, pool: DriverPool) -> None:
        """Several channels published and consumed at once all arrive complete."""
        driver = await pool.new()
        per_channel = 30 * self.scale
        channels = [self.names()[0] for _ in range(5)]
        await driver.provision(channels)
        emitter = driver.emitter()
        receiver = driver.receiver("svc")
        got: dict[str, Collector] = {c: Collector() for c in channels}
        for channel in channels:
            collector = got[channel]
            receiver.subscribe(
                channel,
                action=f"act-{channel}",
                handler=lambda ctx, msg, c=collector: c.add(msg.id),  # type: ignore[misc]
            )
        await self.started(pool, receiver)

        async def publish(channel: str) -> set[str]:
            ids = await asyncio.gather(
                *(emitter.emit(Event(channel, f"k{i}", {"i": i})) for i in range(per_channel))
            )
            return set(ids)

        sent = await asyncio.gather(*(publish(c) for c in channels))
        for channel, ids in zip(channels, sent, strict=True):
            received = await got[channel].wait_for(per_channel, within=self.timeout)
            assert set(received) == ids

    async def test_consumer_groups_each_get_everything(self, pool: DriverPool) -> None:
        """Two actions on one channel each receive every event."""
        driver = await pool.new()
        channel, action = self.names()
        count = 20 * self.scale
        await driver.provision([channel])
        receiver = driver.receiver("svc")
        first, second = Collector(), Collector()
        receiver.subscribe(channel, action=f"{action}-a", handler=lambda c, m: first.add(m.id))
        receiver.subscribe(channel, action=f"{action}-b", handler=lambda c, m: second.add(m.id))
        await self.started(pool, receiver)
        ids = await driver.emitter().emit_many(
            Event(channel, f"k{i}", {"i": i}) for i in range(count)
        )
        assert set(await first.wait_for(count, within=self.timeout)) == set(ids)
        assert set(await second.wait_for(count, within=self.timeout)) == set(ids)

    async def test_group_members_share_the_work(self, pool: DriverPool) -> None:
        """Three processes of one action together handle every event; none is lost."""
        channel, action = self.names()
        count = 150 * self.scale
        emitting = await pool.new()
        await emitting.provision([channel])
        got = Collector()
        for n in range(3):
            receiver = (await pool.new()).receiver(f"svc-{n}")
            receiver.subscribe(channel, action=action, handler=lambda c, m: got.add(m.id))
            await self.started(pool, receiver)
        emitter = emitting.emitter()
        batches = [
            emitter.emit_many(Event(channel, f"k{b}-{i}", {"i": i}) for i in range(count // 10))
            for b in range(10)
        ]
        ids = {event_id for batch in await asyncio.gather(*batches) for event_id in batch}
        await eventually(lambda: set(got.items) >= ids, within=self.timeout, what="all events")

    async def test_order_per_key_with_concurrent_handlers(self, pool: DriverPool) -> None:
        """Events of one key run one at a time and in emit order, across group members."""
        channel, action = self.names()
        keys, per_key = 8, 15 * self.scale
        emitting = await pool.new()
        if not emitting.features.ordered_per_key:
            pytest.skip(f"{emitting.features.name} does not keep order per key across members")
        await emitting.provision([channel])
        seen: dict[str, list[int]] = defaultdict(list)
        running: dict[str, int] = defaultdict(int)
        overlaps: list[str] = []
        total = Collector()

        async def handle(ctx: Context, msg: Message[dict[str, int]]) -> None:
            running[msg.key] += 1
            if running[msg.key] > 1:
                overlaps.append(msg.key)
            # Uneven handler times: a member that got a key's later record would finish it
            # before another member finished the earlier one.
            await asyncio.sleep(0.002 if msg.payload["seq"] % 3 == 0 else 0)
            seen[msg.key].append(msg.payload["seq"])
            running[msg.key] -= 1
            total.add(msg.id)

        for n in range(2):
            receiver = (await pool.new()).receiver(f"svc-{n}", concurrency=16)
            receiver.subscribe(channel, action=action, handler=handle)
            await self.started(pool, receiver)
        emitter = emitting.emitter()
        # Bursts: each key's records in flight together, then one event per key at a time.
        half = per_key // 2
        await emitter.emit_many(
            Event(channel, f"key-{k}", {"seq": seq}) for k in range(keys) for seq in range(half)
        )
        for seq in range(half, per_key):
            await emitter.emit_many(Event(channel, f"key-{k}", {"seq": seq}) for k in range(keys))
        await eventually(
            lambda: all(len(set(seen[f"key-{k}"])) == per_key for k in range(keys)),
            within=self.timeout,
            what="every event of every key",
        )
        assert not overlaps
        for k in range(keys):
            sequence = seen[f"key-{k}"]
            # Redelivery after a rebalance may repeat a suffix, never reorder.
            assert sorted(set(sequence)) == list(range(per_key))
            firsts = list(dict.fromkeys(sequence))
            assert firsts == list(range(per_key)), f"key-{k} out of order: {sequence}"

    # -- failures, retries, dead letters ---------------------------------------------------

    async def test_retry_chain_attempts_and_stable_dedup_keys(self, pool: DriverPool) -> None:
        """A failing handler runs again with attempt 2, 3; the dedup keys do not change."""
        driver, channel, action = await self.provisioned(pool)
        calls: list[tuple[int, dict[str, str], str]] = []
        done = Collector()
        receiver = driver.receiver("svc")

        @receiver.subscribe(channel, action=action, payload=Order, retry=FAST_RETRY)
        async def flaky(ctx: Context, msg: Message[Order]) -> None:
            calls.append((msg.attempt, ctx.dedup_keys, msg.channel))
            if msg.attempt < 3:
                raise RuntimeError(f"failure {msg.attempt}")
            done.add(msg)

        await self.started(pool, receiver)
        event_id = await driver.emitter().emit(Event(channel, "k", Order("o1", 1)))
        [message] = await done.wait_for(1, within=self.timeout)
        assert [c[0] for c in calls] == [1, 2, 3]
        expected = {
            "HEXA_EVENT_ID": event_id,
            "HEXA_EVENT_HANDLER_ACTION_NAME": action,
            "HEXA_ROOT_EVENT_ID": event_id,
            "HEXA_ROOT_EVENT_HANDLER_ACTION_NAME": action,
        }
        assert all(keys == expected for _, keys, _ in calls)
        assert all(source == channel for _, _, source in calls)
        assert message.payload == Order("o1", 1)

    async def test_dead_letter_after_retries_carries_error_details(self, pool: DriverPool) -> None:
        """After 1 + max_retries runs the event is dead-lettered with what went wrong."""
        driver, channel, action = await self.provisioned(pool)
        runs = Collector()
        receiver = driver.receiver("svc")

        @receiver.subscribe(channel, action=action, retry=FAST_RETRY)
        async def broken(ctx: Context, msg: Message[Any]) -> None:
            runs.add(msg.attempt)
            raise ValueError("card declined")

        await self.started(pool, receiver)
        letters = await self.dead_letters(pool, action)
        event_id = await driver.emitter().emit(Event(channel, "k1", {"n": 1}))
        [letter] = await letters.wait_for(1, within=self.timeout)
        assert runs.items == [1, 2, 3]
        h = letter.headers
        assert h[env.DEAD_LETTER_REASON] == b"retries-exhausted"
        assert h[env.ERROR_TYPE] == b"ValueError"
        assert h[env.ERROR_MESSAGE] == b"card declined"
        assert h[env.ATTEMPT] == b"3"
        assert h[env.SOURCE_CHANNEL] == channel.encode()
        assert h[env.ROOT_EVENT_ID] == event_id.encode()
        assert h[env.ROOT_ACTION] == action.encode()
        assert h[env.EVENT_ID] == event_id.encode()
        assert json.loads(letter.body) == {"n": 1}

    async def test_permanent_error_skips_retries(self, pool: DriverPool) -> None:
        """PermanentError (or a listed type) dead-letters on the first failure."""
        driver, channel, action = await self.provisioned(pool)
        runs = Collector()
        receiver = driver.receiver("svc")

        @receiver.subscribe(channel, action=action, retry=FAST_RETRY, permanent=(KeyError,))
        async def strict(ctx: Context, msg: Message[Any]) -> None:
            runs.add(msg.payload["kind"])
            if msg.payload["kind"] == "listed":
                raise KeyError("no such customer")
            raise PermanentError("malformed order")

        await self.started(pool, receiver)
        letters = await self.dead_letters(pool, action)
        emitter = driver.emitter()
        await emitter.emit(Event(channel, "k1", {"kind": "listed"}))
        await emitter.emit(Event(channel, "k2", {"kind": "permanent"}))
        received = await letters.wait_for(2, within=self.timeout)
        assert sorted(runs.items) == ["listed", "permanent"]
        reasons = {json.loads(r.body)["kind"]: r.headers[env.DEAD_LETTER_REASON] for r in received}
        assert reasons == {"listed": b"permanent-error", "permanent": b"permanent-error"}
        assert all(m.headers[env.ATTEMPT] == b"1" for m in received)

    async def test_poison_messages_are_dead_lettered_and_consumer_keeps_going(
        self, pool: DriverPool
    ) -> None:
        """Undecodable bodies, garbage headers and unknown codecs never reach the handler."""
        driver, channel, action = await self.provisioned(pool)
        good = Collector()
        receiver = driver.receiver("svc")

        @receiver.subscribe(channel, action=action, payload=Order, retry=FAST_RETRY)
        async def handle(ctx: Context, msg: Message[Order]) -> None:
            good.add(msg.payload)

        await self.started(pool, receiver)
        letters = await self.dead_letters(pool, action)
        sane = driver.emitter().seal(Event(channel, "k", Order("ok", 1)))

        def variant(body: bytes, **headers: bytes) -> RawRecord:
            merged = {**sane.headers, **{k.replace("__", "-"): v for k, v in headers.items()}}
            return RawRecord(channel=channel, key="k", headers=merged, body=body)

        poison = [
            variant(b"{not json"),
            variant(b'{"id": 1, "total": "x"}'),
            variant(sane.body, _ctx_user=b"\xff\xfe not a user"),
            variant(sane.body, _payload_encoder=b"no-such-codec"),
            variant(
                sane.body,
                HEXA_ATTEMPT=b"three",
                HEXA_ROOT_EVENT_HANDLER_ACTION_NAME=action.encode(),
            ),
            RawRecord(channel=channel, key="k", headers={}, body=b"\x00\x01"),
        ]
        await driver.publish(poison)
        await driver.emitter().emit(Event(channel, "k", Order("after", 2)))
        await good.wait_for(1, within=self.timeout)
        received = await letters.wait_for(len(poison), within=self.timeout)
        assert all(m.headers[env.DEAD_LETTER_REASON] == b"poison" for m in received)
        assert good.items == [Order("after", 2)]

    async def test_handler_that_keeps_failing_loses_nothing(self, pool: DriverPool) -> None:
        """Failing consumers closed one after another burn no event (Watermill's check)."""
        channel, action = self.names()
        count = 10 * self.scale
        ids = await self.backlog(pool, channel, count, keys=count)
        slow_retry = RetryPolicy(max_retries=3, initial_delay=0.05, in_place=True)
        for n in range(2):
            failing = Collector()
            receiver = (await pool.new()).receiver(f"failing-{n}", drain_timeout=2)

            async def fail(ctx: Context, msg: Message[Any], sink: Collector = failing) -> None:
                sink.add(msg.id)
                raise RuntimeError("not today")

            receiver.subscribe(channel, action=action, retry=slow_retry, handler=fail)
            await self.started(pool, receiver)
            await failing.wait_for(1, within=self.timeout)
            await receiver.close()
        got = Collector()
        final = (await pool.new()).receiver("healthy")
        final.subscribe(channel, action=action, handler=lambda c, m: got.add(m.id))
        await self.started(pool, final)
        await eventually(lambda: set(got.items) >= ids, within=self.timeout, what="all events")

    # -- context ------------------------------------------------------------------------------

    async def test_context_round_trip(self, pool: DriverPool) -> None:
        """Correlation id, locale, user, baggage, trace context and reply channel travel."""
        got = Collector()
        driver, channel = await self.subscribed(pool, lambda c, m: got.add((c, m)))
        user = User(
            id="u-7",
            type=UserType.REGULAR,
            email="a@example.org",
            name="Ada",
            username="ada",
            roles=("admin", "billing"),
        )
        sent = Context(
            correlation_id="req-123",
            locale="fa-IR",
            user=user,
            baggage={"tenant": "acme corp", "plan": "gold"},
            traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            tracestate="vendor=1",
        )
        await driver.emitter().emit(Event(channel, "k", {"n": 1}, reply_channel="replies"), sent)
        [(ctx, msg)] = await got.wait_for(1, within=self.timeout)
        assert ctx.correlation_id == "req-123"
        assert ctx.locale == "fa-IR"
        assert ctx.user == user
        assert dict(ctx.baggage) == {"tenant": "acme corp", "plan": "gold"}
        assert ctx.traceparent == sent.traceparent
        assert ctx.tracestate == "vendor=1"
        assert msg.reply_channel == "replies"

    async def test_missing_context_headers_are_tolerated(self, pool: DriverPool) -> None:
        """A foreign record with no hexa headers is handled; its id is the broker position."""
        got = Collector()
        driver, channel = await self.subscribed(pool, lambda c, m: got.add((c, m)))
        await driver.publish([RawRecord(channel, "k", {}, b'{"foreign": true}')])
        [(ctx, msg)] = await got.wait_for(1, within=self.timeout)
        assert msg.payload == {"foreign": True}
        assert ctx.correlation_id
        assert ctx.user is None
        assert msg.id
        assert ctx.event_id == msg.id == ctx.root_event_id

    # -- lifecycle ----------------------------------------------------------------------------

    async def test_close_drains_running_handlers(self, pool: DriverPool) -> None:
        """close() lets a running handler finish and acks it: no redelivery afterwards."""
        driver, channel, action = await self.provisioned(pool)
        entered, release = asyncio.Event(), asyncio.Event()
        finished = Collector()
        receiver = driver.receiver("svc", drain_timeout=self.timeout)

        @receiver.subscribe(channel, action=action)
        async def slow(ctx: Context, msg: Message[Any]) -> None:
            entered.set()
            await release.wait()
            finished.add(msg.id)

        await self.started(pool, receiver)
        event_id = await driver.emitter().emit(Event(channel, "k", {"n": 1}))
        await asyncio.wait_for(entered.wait(), self.timeout)
        closing = asyncio.create_task(receiver.close())
        await asyncio.sleep(0)
        assert not closing.done()
        release.set()
        await asyncio.wait_for(closing, self.timeout)
        await receiver.close()  # a second close is harmless
        assert finished.items == [event_id]

        marker = Collector()
        again = (await pool.new()).receiver("svc-again")
        again.subscribe(channel, action=action, handler=lambda c, m: marker.add(m.id))
        await self.started(pool, again)
        follow_up = await driver.emitter().emit(Event(channel, "k", {"n": 2}))
        await marker.wait_for(1, within=self.timeout)
        assert marker.items == [follow_up]

    async def test_close_cuts_retry_waits_short(self, pool: DriverPool) -> None:
        """A long retry back-off does not hold up close(); the event is not lost."""
        driver, channel, action = await self.provisioned(pool)
        failed = Collector()
        receiver = driver.receiver("svc", drain_timeout=self.timeout)
        long_wait = RetryPolicy(max_retries=1, initial_delay=3600, in_place=True)

        @receiver.subscribe(channel, action=action, retry=long_wait)
        async def fail_once(ctx: Context, msg: Message[Any]) -> None:
            failed.add(msg.attempt)
            raise RuntimeError("later")

        await self.started(pool, receiver)
        await driver.emitter().emit(Event(channel, "k", {"n": 1}))
        await failed.wait_for(1, within=self.timeout)
        began = time.monotonic()
        await receiver.close()
        assert time.monotonic() - began < min(self.timeout, 20)

        got = Collector()
        again = (await pool.new()).receiver("svc-again")
        again.subscribe(channel, action=action, handler=lambda c, m: got.add(m.payload))
        await self.started(pool, again)
        assert await got.wait_for(1, within=self.timeout) == [{"n": 1}]

    async def test_continue_after_close_and_reopen(self, pool: DriverPool) -> None:
        """Receivers opened and closed in turn together see every event (positions kept)."""
        channel, action = self.names()
        count = 60 * self.scale
        ids = await self.backlog(pool, channel, count, keys=5)
        seen: set[str] = set()
        for n in range(3):
            if seen >= ids:
                break  # a close drains what was fetched: an earlier round may have done all
            got = Collector()
            receiver = (await pool.new()).receiver(f"svc-{n}")
            receiver.subscribe(channel, action=action, handler=lambda c, m, g=got: g.add(m.id))  # type: ignore[misc]
            await self.started(pool, receiver)
            await got.wait_for(1, within=self.timeout)
            await receiver.close()
            await receiver.close()
            seen.update(got.items)
        last = Collector()
        receiver = (await pool.new()).receiver("svc-last")
        receiver.subscribe(channel, action=action, handler=lambda c, m: last.add(m.id))
        await self.started(pool, receiver)
        await eventually(
            lambda: seen | set(last.items) >= ids, within=self.timeout, what="catch-up"
        )

    async def test_concurrent_close_does_not_deadlock(self, pool: DriverPool) -> None:
        """Receivers started and closed concurrently; the channel still works afterwards."""
        channel, action = self.names()
        emitting = await pool.new()
        await emitting.provision([channel])

        async def open_and_close(n: int) -> None:
            receiver = (await pool.new()).receiver(f"svc-{n}")
            receiver.subscribe(channel, action=f"{action}-{n}", handler=lambda c, m: None)
            await receiver.start()
            await receiver.close()

        await asyncio.wait_for(asyncio.gather(*(open_and_close(n) for n in range(4))), self.timeout)
        got = Collector()
        receiver = (await pool.new()).receiver("svc")
        receiver.subscribe(channel, action=action, handler=lambda c, m: got.add(m.id))
        await self.started(pool, receiver)
        ids = await emitting.emitter().emit_many(Event(channel, "k", {"i": i}) for i in range(5))
        assert set(await got.wait_for(5, within=self.timeout)) == set(ids)

    async def test_pattern_subscription(self, pool: DriverPool) -> None:
        """A pattern covers existing and new channels that match, and no others."""
        driver = await pool.new()
        if not driver.features.patterns:
            pytest.skip(f"{driver.features.name} does not support channel patterns")
        base, action = self.names()
        await driver.provision([f"{base}.a", f"{base}.b", f"other-{base}"])
        got = Collector()
        receiver = driver.receiver("svc")
        receiver.subscribe(
            pattern=rf"{base}\.[a-z]+", action=action, handler=lambda c, m: got.add(m.channel)
        )
        await self.started(pool, receiver)
        emitter = driver.emitter()
        await emitter.emit(Event(f"other-{base}", "k", {}))
        await emitter.emit(Event(f"{base}.a", "k", {}))
        await emitter.emit(Event(f"{base}.b", "k", {}))
        await got.wait_for(2, within=self.timeout)
        assert sorted(got.items) == [f"{base}.a", f"{base}.b"]
