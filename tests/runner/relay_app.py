"""A relay and a cleaner run by ``hexa-event run relay_app:build`` in the loop-health tests.

``HEXA_RELAY_DB``: the application database (the tests start it without the outbox table,
so claims and deletes fail); ``HEXA_RELAY_TO``: where the relay publishes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import hexa_event as he
from hexa_event.outbox import OutboxCleaner, OutboxRelay


async def build() -> AsyncIterator[Any]:
    db = os.environ["HEXA_RELAY_DB"]
    target = he.connect(os.environ["HEXA_RELAY_TO"])
    relay = OutboxRelay(
        db, target, unhealthy_after=0.5, poll_interval=0.05, retry_delay=0.05, stats_interval=0.1
    )
    cleaner = OutboxCleaner(db, interval=0.05, unhealthy_after=0.5)
    yield [relay, cleaner, target]
