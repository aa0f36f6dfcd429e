"""The batch-handler checks of the conformance suite (part of
:class:`~hexa_event.testing.conformance.DriverConformance`).

A batch handler (``subscribe(..., batch=Batch(...))``) gets lists of messages; these checks
hold its promises on every driver: sizes and ``max_wait``, per-key order within and across
batches, whole-batch and single-item failures through retries and dead letters, poison
items kept out of batches, and a close that drains a running batch.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from .. import envelope as env
from ..batching import Batch, BatchFailed
from ..context import Context
from ..driver import RawRecord
from ..errors import PermanentError
from ..event import Event, Message
from ..headers import USER
from ..publishing import Publication, PublishCall
from .contract import DriverPool
from .settling import FAST_RETRY, SettlementConformance
from .waiting import Collector, eventually


class BatchConformance(SettlementConformance):
    """Batch handlers: the same guarantees as single handlers, per message."""

    async def test_batch_sizes_and_max_wait(self, pool: DriverPool) -> None:
        """A partial batch goes out after max_wait; a backlog is cut at max_size."""
        driver, channel, action = await self.provisioned(pool)
        batches = Collector()
        gate = asyncio.Event()
        receiver = driver.receiver("svc")

        @receiver.subscribe(channel, action=action, batch=Batch(max_size=10, max_wait=0.2))
        async def handle(ctx: Context, msgs: list[Message[Any]]) -> None:
            batches.add([m.payload["i"] for m in msgs])
            if len(batches) == 1:
                await gate.wait()

        await self.started(pool, receiver)
        emitter = driver.emitter()
        await emitter.emit_many(Event(channel, f"k{i}", {"i": i}) for i in range(3))
        [first] = await batches.wait_for(1, within=self.timeout)  # 3 < 10: max_wait cut it
        count = 35
        await emitter.emit_many(Event(channel, f"k{i}", {"i": i}) for i in range(3, 3 + count))
        await eventually(
            lambda: receiver.health()["actions"][action]["in_flight"] >= len(first) + count,
            within=self.timeout,
            what="the backlog fetched while the first batch runs",
        )
        gate.set()
        await eventually(
            lambda: sum(len(b) for b in batches.items) >= 3 + count,
            within=self.timeout,
            what="every event handled",
        )
        seen = [i for b in batches.items for i in b]
        assert sorted(seen) == list(range(3 + count))
        assert all(1 <= len(b) <= 10 for b in batches.items), batches.items
        assert [len(b) for b in batches.items[1:4]] == [10, 10, 10], batches.items
        await self.settled(receiver, action)

    async def test_batch_order_per_key_and_no_key_in_two_batches(self, pool: DriverPool) -> None:
        """Within and across batches one key's events come in order, never in two running
        batches at once, with several batches running."""
        driver, channel, action = await self.provisioned(pool)
        keys, per_key = 4, 30
        seen: dict[str, list[int]] = {f"k{k}": [] for k in range(keys)}
        running: set[str] = set()
        overlaps: list[str] = []
        got = Collector()
        receiver = driver.receiver("svc")

        @receiver.subscribe(
            channel, action=action, batch=Batch(max_size=7, max_wait=0.05), concurrency=3
        )
        async def handle(ctx: Context, msgs: list[Message[Any]]) -> None:
            mine = {m.key for m in msgs}
            overlaps.extend(mine & running)
            running.update(mine)
            for m in msgs:
                seen[m.key].append(m.payload["n"])
            for _ in range(3):
                await asyncio.sleep(0)
            running.difference_update(mine)
            for m in msgs:
                got.add(m.id)

        await self.started(pool, receiver)
        emitter = driver.emitter()
        for n in range(per_key):
            await emitter.emit_many(Event(channel, f"k{k}", {"n": n}) for k in range(keys))
        await got.wait_for(keys * per_key, within=self.timeout)
        assert not overlaps, f"keys in two running batches at once: {overlaps}"
        assert all(order == list(range(per_key)) for order in seen.values()), seen

    async def test_batch_failure_is_retried_then_dead_lettered(self, pool: DriverPool) -> None:
        """A batch handler raising fails every message: each is retried, then dead-lettered
        with the error, like a single event."""
        driver, channel, action = await self.provisioned(pool)
        runs = Collector()
        receiver = driver.receiver("svc")

        @receiver.subscribe(
            channel, action=action, retry=FAST_RETRY, batch=Batch(max_size=50, max_wait=0.05)
        )
        async def broken(ctx: Context, msgs: list[Message[Any]]) -> None:
            for m in msgs:
                runs.add((m.payload["n"], m.attempt))
            raise ValueError("warehouse down")

        await self.started(pool, receiver)
        letters = await self.dead_letters(pool, action)
        ids = await driver.emitter().emit_many(Event(channel, f"k{n}", {"n": n}) for n in range(3))
        received = await letters.wait_for(3, within=self.timeout)
        assert sorted(r.headers[env.EVENT_ID].decode() for r in received) == sorted(ids)
        for letter in received:
            assert letter.headers[env.DEAD_LETTER_REASON] == b"retries-exhausted"
            assert letter.headers[env.ERROR_TYPE] == b"ValueError"
            assert letter.headers[env.ERROR_MESSAGE] == b"warehouse down"
            assert letter.headers[env.ATTEMPT] == b"3"
        assert sorted(runs.items) == sorted((n, a) for n in range(3) for a in (1, 2, 3))
        await self.settled(receiver, action)
        counters = receiver.health()["actions"][action]
        assert counters["dead_lettered"] == 3
        assert counters["failed"] == 9

    async def test_batch_single_item_failures(self, pool: DriverPool) -> None:
        """BatchFailed fails only the named messages: one is retried into a later batch, a
        permanent one is dead-lettered at once, the rest are acked once."""
        driver, channel, action = await self.provisioned(pool)
        runs = Collector()
        receiver = driver.receiver("svc")

        @receiver.subscribe(
            channel, action=action, retry=FAST_RETRY, batch=Batch(max_size=50, max_wait=0.1)
        )
        async def handle(ctx: Context, msgs: list[Message[Any]]) -> None:
            failures: dict[int | str, BaseException] = {}
            for index, m in enumerate(msgs):
                runs.add((m.payload["n"], m.attempt))
                if m.payload["n"] == 2 and m.attempt == 1:
                    failures[index] = RuntimeError("index not ready")
                if m.payload["n"] == 3:
                    failures[m.id] = PermanentError("malformed row")
            if failures:
                raise BatchFailed(failures)

        await self.started(pool, receiver)
        letters = await self.dead_letters(pool, action)
        await driver.emitter().emit_many(Event(channel, f"k{n}", {"n": n}) for n in range(5))
        [letter] = await letters.wait_for(1, within=self.timeout)
        assert json.loads(letter.body) == {"n": 3}
        assert letter.headers[env.DEAD_LETTER_REASON] == b"permanent-error"
        assert letter.headers[env.ATTEMPT] == b"1"
        await eventually(lambda: (2, 2) in runs.items, within=self.timeout, what="the retry")
        await self.settled(receiver, action)
        assert sorted(runs.items) == [(0, 1), (1, 1), (2, 1), (2, 2), (3, 1), (4, 1)]
        counters = receiver.health()["actions"][action]
        assert counters["handled"] == 4  # 0, 1, 4 and the retry of 2
        assert counters["retried"] == 1
        assert counters["dead_lettered"] == 1

    async def test_batch_a_handler_that_empties_its_list_still_fails_it(
        self, pool: DriverPool
    ) -> None:
        """The list is the handler's own: one that empties it (hands it on, say) and then
        raises still fails every message of the batch, and each is retried."""
        driver, channel, action = await self.provisioned(pool)
        batches = Collector()
        receiver = driver.receiver("svc")

        @receiver.subscribe(
            channel, action=action, retry=FAST_RETRY, batch=Batch(max_size=50, max_wait=0.1)
        )
        async def flush(ctx: Context, msgs: list[Message[Any]]) -> None:
            batches.add([(m.payload["n"], m.attempt) for m in msgs])
            msgs.clear()
            if len(batches) == 1:
                raise RuntimeError("flush failed")

        await self.started(pool, receiver)
        await driver.emitter().emit_many(Event(channel, f"k{n}", {"n": n}) for n in range(3))
        [first] = await batches.wait_for(1, within=self.timeout)

        def seen() -> set[tuple[int, int]]:
            return {item for batch in batches.items for item in batch}

        await eventually(
            lambda: {(n, 2) for n, _ in first} <= seen() and len(seen()) == 3 + len(first),
            within=self.timeout,
            what="every message of the failed batch retried, the others handled",
        )
        await self.settled(receiver, action)
        counters = receiver.health()["actions"][action]
        assert (counters["failed"], counters["retried"]) == (len(first), len(first))
        assert counters["handled"] == 3

    async def test_batch_failed_indexes_name_messages_in_the_list_as_the_handler_left_it(
        self, pool: DriverPool
    ) -> None:
        """A handler that reorders its list names messages by their index in its order."""
        driver, channel, action = await self.provisioned(pool)
        got = Collector()
        receiver = driver.receiver("svc")

        @receiver.subscribe(
            channel, action=action, retry=FAST_RETRY, batch=Batch(max_size=50, max_wait=0.1)
        )
        async def load(ctx: Context, msgs: list[Message[Any]]) -> None:
            msgs.reverse()  # newest first
            for m in msgs:
                got.add(m.payload["n"])
            bad = {i: PermanentError("bad row") for i, m in enumerate(msgs) if m.payload["n"] == 0}
            if bad:
                raise BatchFailed(bad)  # type: ignore[arg-type]

        await self.started(pool, receiver)
        letters = await self.dead_letters(pool, action)
        await driver.emitter().emit_many(Event(channel, "k", {"n": n}) for n in range(4))
        [letter] = await letters.wait_for(1, within=self.timeout)
        assert json.loads(letter.body) == {"n": 0}
        await got.wait_for(4, within=self.timeout)
        await self.settled(receiver, action)
        counters = receiver.health()["actions"][action]
        assert (counters["handled"], counters["dead_lettered"]) == (3, 1)

    async def test_batch_handled_items_are_acked_before_failures_are_sent_on(
        self, pool: DriverPool
    ) -> None:
        """A retry copy that cannot be published (a hung broker), cut at close, gives back
        only its own message: the handled messages of its batch stay acked."""
        driver, channel, action = await self.provisioned(pool)
        publishing = asyncio.Event()

        def hang(call: PublishCall) -> PublishCall:
            async def publish(publication: Publication) -> None:
                if publication.purpose == "retry":
                    publishing.set()
                    await asyncio.Event().wait()
                await call(publication)

            return publish

        receiver = driver.receiver("svc", drain_timeout=0.05, publish_middlewares=[hang])

        @receiver.subscribe(channel, action=action, batch=Batch(max_size=10, max_wait=0.1))
        async def handle(ctx: Context, msgs: list[Message[Any]]) -> None:
            failing = {n: ValueError("no") for n, m in enumerate(msgs) if m.payload["n"] == 0}
            if failing:
                raise BatchFailed(failing)  # type: ignore[arg-type]

        await self.started(pool, receiver)
        await driver.emitter().emit_many(Event(channel, "k", {"n": n}) for n in range(3))
        await asyncio.wait_for(publishing.wait(), self.timeout)
        await receiver.close()

        again = Collector()
        second = (await pool.new()).receiver("svc-again")
        second.subscribe(channel, action=action, handler=lambda c, m: again.add(m.payload["n"]))
        await self.started(pool, second)
        await again.wait_for(1, within=self.timeout)
        await self.settled(second, action)
        assert again.items == [0]  # only the failed one comes back

    async def test_batch_poison_items_never_reach_the_handler(self, pool: DriverPool) -> None:
        """Undecodable records in a batch are dead-lettered one by one; the batch runs on."""
        driver, channel, action = await self.provisioned(pool)
        got = Collector()
        receiver = driver.receiver("svc")

        @receiver.subscribe(
            channel, action=action, retry=FAST_RETRY, batch=Batch(max_size=50, max_wait=0.1)
        )
        async def handle(ctx: Context, msgs: list[Message[Any]]) -> None:
            for m in msgs:
                got.add((m.payload, m.attempt))

        await self.started(pool, receiver)
        letters = await self.dead_letters(pool, action)
        sane = driver.emitter().seal(Event(channel, "k", {"n": 1}))
        poison = [
            RawRecord(channel, "k", dict(sane.headers), b"{not json"),
            RawRecord(channel, "j", {**sane.headers, env.PAYLOAD_ENCODER: b"nope"}, sane.body),
            # The handler never sees a message's own context, yet a malformed one is poison.
            RawRecord(channel, "k", {**sane.headers, USER: b"{not a user"}, sane.body),
        ]
        await driver.publish([sane, *poison])
        await driver.emitter().emit(Event(channel, "j", {"n": 2}))
        received = await letters.wait_for(len(poison), within=self.timeout)
        assert all(r.headers[env.DEAD_LETTER_REASON] == b"poison" for r in received)
        await got.wait_for(2, within=self.timeout)
        await self.settled(receiver, action)
        assert sorted(got.items, key=lambda x: x[0]["n"]) == [({"n": 1}, 1), ({"n": 2}, 1)]
        assert receiver.health()["actions"][action]["failed"] == 0

    async def test_batch_close_drains_a_running_batch(self, pool: DriverPool) -> None:
        """close() lets a running batch finish and acks it: none of it comes back."""
        driver, channel, action = await self.provisioned(pool)
        entered, release = asyncio.Event(), asyncio.Event()
        finished = Collector()
        receiver = driver.receiver("svc", drain_timeout=self.timeout)

        @receiver.subscribe(channel, action=action, batch=Batch(max_size=10, max_wait=0.1))
        async def slow(ctx: Context, msgs: list[Message[Any]]) -> None:
            entered.set()
            await release.wait()
            for m in msgs:
                finished.add(m.id)

        await self.started(pool, receiver)
        ids = await driver.emitter().emit_many(Event(channel, f"k{n}", {"n": n}) for n in range(4))
        await asyncio.wait_for(entered.wait(), self.timeout)
        closing = asyncio.create_task(receiver.close())
        await asyncio.sleep(0)
        assert not closing.done()
        release.set()
        await asyncio.wait_for(closing, self.timeout)
        assert sorted(finished.items) == sorted(ids)  # the batch and any queued after it

        marker = Collector()
        again = (await pool.new()).receiver("svc-again")
        again.subscribe(channel, action=action, handler=lambda c, m: marker.add(m.id))
        await self.started(pool, again)
        follow_up = await driver.emitter().emit(Event(channel, "k", {"n": 9}))
        await marker.wait_for(1, within=self.timeout)
        assert marker.items == [follow_up]
