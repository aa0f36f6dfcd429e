"""What an attacker (or a damaged table, or a buggy client library) hands the relay: stored
headers that do not decode are parked with the reason, and every other row of the batch is
relayed; a publish raising a BaseException is a failure said, counted and retried."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import msgspec
import pytest
from sqlalchemy import create_engine, text

from db_helpers import RecordingDriver, outbox_emit, rows
from hexa_event import Event
from hexa_event._sql.urls import sync_url
from hexa_event.driver import RawRecord
from hexa_event.outbox import OutboxRelay
from hexa_event.testing import eventually


def emit(url: str, keys: list[str]) -> list[str]:
    return outbox_emit(url, [Event("orders", key, {"n": n}) for n, key in enumerate(keys)])


def damage(url: str, event_id: str, headers: bytes) -> None:
    engine = create_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE hexa_outbox SET headers = :h WHERE event_id = :e"),
                {"h": headers, "e": event_id},
            )
    finally:
        engine.dispose()


async def test_rows_whose_headers_do_not_decode_are_parked_not_poisoning_the_batch(
    db_url: str,
) -> None:
    ids = emit(db_url, ["a", "b", "c", "b", "d"])
    damage(db_url, ids[1], b"\xc1 not MessagePack")
    damage(db_url, ids[2], msgspec.msgpack.encode({"h": 5}))  # a map, not of bytes
    driver = RecordingDriver()
    async with OutboxRelay(db_url, driver, retry_delay=60) as relay:
        assert await relay.drain(max_seconds=30) == 3
        stats = await relay.stats()
    assert driver.ids() == [ids[0], ids[3], ids[4]]  # b's later row is not held back
    assert (stats.backlog, stats.parked) == (0, 2)
    parked = rows(
        db_url, "SELECT event_id, last_error FROM hexa_outbox WHERE sent_at IS NULL ORDER BY id"
    )
    assert [event_id for event_id, _ in parked] == ids[1:3]
    for _, error in parked:
        assert error.startswith("parked: its stored headers do not decode"), error


class Fatal(BaseException):
    """Not an Exception: what a driver's bug or a library's own control flow may raise."""


class FatalDriver(RecordingDriver):
    async def publish(self, records: Sequence[RawRecord]) -> None:
        self.calls += 1
        raise Fatal("the client library gave up")


async def test_a_publish_raising_a_base_exception_is_a_counted_failure(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    emit(db_url, ["a", "b"])
    driver = FatalDriver()
    relay = OutboxRelay(db_url, driver, lease=0.2, poll_interval=0.05, unhealthy_after=0.2)
    caplog.set_level(logging.ERROR, "hexa_event.outbox.relay")
    async with relay:
        running = asyncio.create_task(relay.run())
        await eventually(lambda: bool(relay.health()["problems"]), what="publishing failing")
        relay.stop()
        await asyncio.wait_for(running, 30)
    assert relay.failed_batches >= 2
    assert "Fatal: the client library gave up" in relay.health()["publish_error"]
    assert "outbox relay: a batch failed (Fatal: the client library gave up)" in caplog.text
    assert rows(db_url, "SELECT count(*) FROM hexa_outbox") == [(2,)]  # unsent, not lost
