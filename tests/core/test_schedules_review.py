"""Scheduled events under attack: due times in the far past, on an engine that holds
scheduled records itself (memory, told it does) and on the wire."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest

import hexa_event as he
from hexa_event import envelope as env
from hexa_event.testing import Collector


@pytest.mark.parametrize(
    "at",
    [
        datetime(1969, 7, 20, 20, 17, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))),
        datetime(2001, 1, 1, tzinfo=UTC),
    ],
    ids=["1969", "year 1", "2001"],
)
async def test_a_due_time_in_the_past_means_at_once(at: datetime) -> None:
    """deliver_at in the past means "at once", before 1970 too: the record carries no due
    time, and a broker that holds scheduled records (Pulsar, JetStream) is not handed a
    negative not-before time, which refused the emit."""
    assert env.DELIVER_AT not in he.Envelope().seal(he.Event("c", "k", {}, deliver_at=at)).headers
    conn = he.connect("memory://")
    conn.driver.features = dataclasses.replace(conn.driver.features, scheduled_publish=True)
    seen = Collector()
    receiver = conn.receiver("svc")
    receiver.subscribe("reminders", action="remind", handler=seen.add_message)
    async with receiver:
        sent = await conn.emitter().emit(he.Event("reminders", "k", {}, deliver_at=at))
        (msg,) = await seen.wait_for(1, within=10)
        assert msg.id == sent
    await conn.close()
