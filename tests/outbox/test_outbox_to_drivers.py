"""Outbox to real drivers: what commits is delivered once per event id, in key order;
what rolls back never leaves."""

from __future__ import annotations

import os
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

import hexa_event as he
from db_helpers import RecordingDriver
from hexa_event._sql.urls import sync_url
from hexa_event.outbox import Outbox, OutboxRelay
from hexa_event.testing import Collector
from hexa_event_services import require_service

TARGETS = [
    "sqlite",
    pytest.param("kafka", marks=pytest.mark.kafka),
]


def target_url(target: str, tmp_path: Path) -> str:
    if target == "sqlite":
        return f"sqlite:///{tmp_path / 'log.db'}"
    require_service("kafka")
    return f"kafka://{os.environ.get('HEXA_KAFKA_BOOTSTRAP', '127.0.0.1:9092')}"


@pytest.mark.parametrize("target", TARGETS)
async def test_committed_rows_reach_the_driver_once_rolled_back_ones_never(
    db_url: str, target: str, tmp_path: Path
) -> None:
    channel = f"orders-{uuid.uuid4().hex[:8]}"
    outbox = Outbox()
    engine = create_engine(sync_url(db_url))
    committed: list[str] = []
    ctx = he.Context(correlation_id="req-outbox", locale="de")
    try:
        for tx in range(4):
            with engine.begin() as conn:
                committed += outbox.emit_many(
                    conn,
                    [he.Event(channel, f"k{i % 3}", {"tx": tx, "i": i}) for i in range(10)],
                    ctx,
                )
        with engine.connect() as conn, conn.begin() as tx_:
            outbox.emit(conn, he.Event(channel, "k0", {"tx": "rolled back"}), ctx)
            tx_.rollback()
    finally:
        engine.dispose()

    driver = he.connect(target_url(target, tmp_path))
    got = Collector()
    receiver = driver.receiver("svc")

    @receiver.subscribe(channel, action=f"act-{channel}")
    async def handle(c: he.Context, msg: he.Message[Any]) -> None:
        got.add((msg.id, msg.key, msg.payload, c.correlation_id, c.locale))

    try:
        async with OutboxRelay(db_url, driver, batch_size=7) as relay:
            assert await relay.drain() == len(committed)
            assert (await relay.stats()).backlog == 0
        async with receiver:
            items = await got.wait_for(len(committed), within=60)
    finally:
        await driver.close()
    assert sorted(item[0] for item in items) == sorted(committed)
    assert all(item[2]["tx"] != "rolled back" for item in items)
    assert {(item[3], item[4]) for item in items} == {("req-outbox", "de")}
    per_key: dict[str, list[int]] = defaultdict(list)
    for _, key, payload, _, _ in items:
        per_key[key].append(payload["tx"] * 10 + payload["i"])
    for key, order in per_key.items():
        assert order == sorted(order), f"{key} out of order: {order}"


async def test_a_target_that_is_not_persistent_is_refused(db_url: str) -> None:
    """Issue 9 #3: rows marked sent into a broker that dies with the process are lost."""
    from hexa_event.driver import Features
    from hexa_event.errors import ConfigurationError

    class Volatile(RecordingDriver):
        features = Features(name="volatile", persistent=False)

    with pytest.raises(ConfigurationError, match="persistent"):
        OutboxRelay(db_url, Volatile())
