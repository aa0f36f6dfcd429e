"""A row a foreign writer put in an SQLite log with text or a number where the driver
writes BLOBs (SQLite keeps what it is given) is delivered, and the group's position moves
past it. Reading such a row raised: the row was never delivered, and the group's stored
position stayed before it for good (every later record was run again after each restart)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import hexa_event
from hexa_event.driver import RawRecord, SubscriptionSpec
from hexa_event.drivers.sql import SqlDriver


async def test_a_row_with_text_blobs_is_delivered_and_passed(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    driver = hexa_event.connect(f"sqlite:///{path}").driver
    assert isinstance(driver, SqlDriver)
    try:
        await driver.publish([RawRecord("orders", "k", {}, b"first")])
        with sqlite3.connect(path) as db:
            part = db.execute("SELECT part FROM hexa_log").fetchone()[0]
            db.execute(
                "INSERT INTO hexa_log (txid, channel, part, msg_key, headers, body, created_ms, "
                "visible_ms) VALUES (0, 'orders', ?, 7, 'not msgpack', 'text body', ?, 0)",
                (part, int(time.time() * 1000)),
            )
        db.close()
        await driver.publish([RawRecord("orders", "k", {"h": b"v"}, b"last")])
        spec = SubscriptionSpec(group="g", channels=("orders",), start="earliest")
        subscription = await driver.subscribe(spec)
        seen: list[tuple[str, dict[str, bytes], bytes]] = []
        async with asyncio.timeout(20):
            while len(seen) < 3:
                batch = await subscription.fetch(10)
                for delivery in batch:
                    record = delivery.record
                    seen.append((record.key, dict(record.headers), record.body))
                    delivery.ack()
                await subscription.settle(batch)
        assert seen == [("k", {}, b"first"), ("7", {}, b"text body"), ("k", {"h": b"v"}, b"last")]
        await subscription.close()
    finally:
        await driver.close()
    with sqlite3.connect(path) as db:
        stored = db.execute("SELECT max(pos_id) FROM hexa_positions WHERE part = ?", (part,))
        assert stored.fetchone()[0] == 3, "the group's position stopped before the foreign row"
    db.close()
