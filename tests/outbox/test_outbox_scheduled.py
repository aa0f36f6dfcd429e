"""A scheduled event emitted through the outbox reaches a broker that holds records until
due (``features.scheduled_publish``: Pulsar, JetStream) with its due time as the record's
``not_before``, as the emitter sends it; otherwise the broker delivered it at once and the
consumer held it, a window place taken, until due."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, update

from db_helpers import RecordingDriver, event_id, outbox_emit
from hexa_event import Event
from hexa_event._sql.urls import sync_url
from hexa_event.driver import Features
from hexa_event.envelope import DELIVER_AT
from hexa_event.event import MAX_SCHEDULE
from hexa_event.outbox import OutboxRelay, outbox_table
from hexa_event.outbox.store import decode_headers, encode_headers


class SchedulingDriver(RecordingDriver):
    """A broker that holds each record until its ``not_before``."""

    features = Features(name="scheduling", persistent=True, scheduled_publish=True)


def emit(url: str, events: list[Event[object]]) -> list[str]:
    return outbox_emit(url, events)


@pytest.mark.parametrize("scheduling", [True, False])
async def test_the_relay_hands_a_scheduled_events_due_time_to_the_broker(
    db_url: str, scheduling: bool
) -> None:
    ids = emit(
        db_url,
        [
            Event("orders", "k", {"n": 0}, delay=600),
            Event("orders", "k", {"n": 1}),
            Event("orders", "j", {"n": 2}, delay=30),
        ],
    )
    driver = SchedulingDriver() if scheduling else RecordingDriver()
    async with OutboxRelay(db_url, driver) as relay:
        assert await relay.drain(max_seconds=20) == 3
    sent = {event_id(r): r for r in driver.records}
    assert set(sent) == set(ids)
    assert sent[ids[1]].not_before == 0.0  # not scheduled: at once
    for n in (0, 2):
        record = sent[ids[n]]
        due = int(record.headers[DELIVER_AT]) / 1000
        # As the emitter does it: only a broker that holds records is told.
        assert record.not_before == (due if scheduling else 0.0)


async def test_a_malformed_or_far_due_time_is_not_a_not_before_the_broker_refuses(
    db_url: str,
) -> None:
    """A row written by hand: a due time that is not a number is left to the consumer
    (which refuses it), and one past the longest schedule is held that long."""
    ids = emit(db_url, [Event("orders", f"k{n}", {"n": n}, delay=60) for n in range(2)])
    engine = create_engine(sync_url(db_url))
    try:
        with engine.begin() as conn:
            rows = conn.execute(outbox_table.select().order_by(outbox_table.c.id)).all()
            for row, value in zip(rows, (b"soon", b"9" * 18), strict=True):
                headers = {**decode_headers(row.headers), DELIVER_AT: value}
                conn.execute(
                    update(outbox_table)
                    .where(outbox_table.c.id == row.id)
                    .values(headers=encode_headers(headers))
                )
    finally:
        engine.dispose()
    driver = SchedulingDriver()
    async with OutboxRelay(db_url, driver) as relay:
        assert await relay.drain(max_seconds=20) == 2
    sent = {event_id(r): r for r in driver.records}
    assert sent[ids[0]].not_before == 0.0
    assert time.time() < sent[ids[1]].not_before <= time.time() + MAX_SCHEDULE
