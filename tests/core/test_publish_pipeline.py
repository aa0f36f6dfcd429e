"""The publish pipeline: emits, retry copies (and retries in place) and dead letters reach
the driver through the same publish middlewares, as the core built them, with why."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import hexa_event as he
from hexa_event import envelope as env
from hexa_event.testing import Collector, eventually


class Recording(he.Connection):
    """A connection that keeps every record handed to the driver (emitters and receivers
    made on it directly publish through it)."""

    def __init__(self, driver: he.Driver) -> None:
        super().__init__(driver)
        self.published: list[he.RawRecord] = []

    async def publish(self, records: Sequence[he.RawRecord]) -> None:
        await self.driver.publish(records)
        self.published.extend(records)


def _watch(seen: list[he.Publication]) -> he.PublishMiddleware:
    def middleware(call: he.PublishCall) -> he.PublishCall:
        async def watched(publication: he.Publication) -> None:
            seen.append(publication)
            await call(publication)

        return watched

    return middleware


def _conn() -> Recording:
    return Recording(he.connect(f"memory://{uuid.uuid4().hex}").driver)


async def test_a_publish_middleware_sees_the_retry_copy_and_the_dead_letter() -> None:
    conn = _conn()
    seen: list[he.Publication] = []
    receiver = he.Receiver(conn, name="svc", publish_middlewares=[_watch(seen)])
    runs = Collector()

    @receiver.subscribe(
        "orders", action="bill", retry=he.RetryPolicy(max_retries=1, initial_delay=0.01)
    )
    async def bill(ctx: he.Context, msg: he.Message[Any]) -> None:
        runs.add(msg)
        raise RuntimeError("card declined")

    async with receiver:
        event_id = await he.Emitter(conn).emit(he.Event("orders", "k", {"n": 1}))
        await runs.wait_for(2)
        await eventually(lambda: receiver.subscriptions["bill"].counters.dead_lettered == 1)
    await conn.close()

    retry, letter = seen
    assert (retry.purpose, retry.action, retry.reason) == ("retry", "bill", "RuntimeError")
    assert (letter.purpose, letter.action) == ("dead-letter", "bill")
    assert letter.reason == "retries-exhausted"
    # The failed run's own message and error, the objects the handler saw and raised.
    assert retry.message is runs.items[0]
    assert letter.message is runs.items[1]
    assert isinstance(retry.error, RuntimeError)
    assert str(retry.error) == "card declined"
    # The records are the ones the driver got, as the core built them.
    copies = [r for r in conn.published if r.channel != "orders"]
    assert [r.channel for r in copies] == ["bill.retry.1", "bill.dlq"]
    assert retry.records[0] is copies[0]
    assert letter.records[0] is copies[1]
    assert copies[1].headers[env.DEAD_LETTER_REASON] == b"retries-exhausted"
    assert copies[1].headers[env.EVENT_ID] == event_id.encode()


async def test_a_retry_in_place_passes_with_no_records_and_poison_with_no_message() -> None:
    conn = _conn()
    seen: list[he.Publication] = []
    receiver = he.Receiver(conn, name="svc", publish_middlewares=[_watch(seen)])
    runs = Collector()

    @receiver.subscribe(
        "jobs",
        action="work",
        payload=int,
        retry=he.RetryPolicy(max_retries=1, initial_delay=0.01, in_place=True),
    )
    async def work(ctx: he.Context, msg: he.Message[int]) -> None:
        runs.add(msg)
        if msg.attempt == 1:
            raise TimeoutError("slow")

    async with receiver:
        await he.Emitter(conn).emit(he.Event("jobs", "k", 1))
        await runs.wait_for(2)
        await conn.publish([he.RawRecord(channel="jobs", key="k", headers={}, body=b"not json")])
        counters = receiver.subscriptions["work"].counters
        await eventually(lambda: counters.poison == 1 and counters.handled == 1)
    await conn.close()

    in_place, poison = seen
    assert (in_place.purpose, in_place.reason, in_place.records) == ("retry", "TimeoutError", ())
    assert in_place.message is runs.items[0]
    assert (poison.purpose, poison.reason, poison.message) == ("dead-letter", "poison", None)
    assert [r.channel for r in poison.records] == ["work.dlq"]
    assert "work.retry.1" not in {r.channel for r in conn.published}


async def test_a_failing_publish_middleware_gives_the_event_back_and_loses_nothing() -> None:
    conn = _conn()
    refused: list[he.Publication] = []

    def refuse_once(call: he.PublishCall) -> he.PublishCall:
        async def publish(publication: he.Publication) -> None:
            if publication.purpose == "dead-letter" and not refused:
                refused.append(publication)
                raise ConnectionError("audit log down")
            await call(publication)

        return publish

    receiver = he.Receiver(conn, name="svc", publish_middlewares=[refuse_once])

    @receiver.subscribe("payments", action="pay", retry=he.NO_RETRIES)
    async def pay(ctx: he.Context, msg: he.Message[Any]) -> None:
        raise he.PermanentError("invalid account")

    async with receiver:
        await he.Emitter(conn).emit(he.Event("payments", "k", {}))
        counters = receiver.subscriptions["pay"].counters
        await eventually(lambda: counters.dead_lettered == 1, within=30)
        assert counters.republish_failures == 1
    await conn.close()
    assert len(refused) == 1
    assert [r.channel for r in conn.published].count("pay.dlq") == 1


async def test_an_emitters_publish_middlewares_see_its_records() -> None:
    conn = _conn()
    seen: list[he.Publication] = []
    emitter = he.Emitter(conn, publish_middlewares=[_watch(seen)])
    ids = await emitter.emit_many([he.Event("a", "k", 1), he.Event("b", "k", 2)])
    await conn.close()
    (publication,) = seen
    assert publication.purpose == "emit"
    assert publication.message is None
    assert [r.headers[env.EVENT_ID].decode() for r in publication.records] == ids
    assert list(publication.records) == conn.published
