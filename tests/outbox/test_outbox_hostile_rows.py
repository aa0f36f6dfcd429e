"""Rows and settings an attacker (or a damaged table) hands the relay: stored headers that do
not decode are parked with the reason, and every other row of the batch is relayed."""

from __future__ import annotations

import msgspec
from sqlalchemy import create_engine, text

from db_helpers import RecordingDriver, rows
from hexa_event import Event
from hexa_event._sql.urls import sync_url
from hexa_event.outbox import Outbox, OutboxRelay


def emit(url: str, keys: list[str]) -> list[str]:
    engine = create_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            return Outbox(notify=False).emit_many(
                conn, [Event("orders", key, {"n": n}) for n, key in enumerate(keys)]
            )
    finally:
        engine.dispose()


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
