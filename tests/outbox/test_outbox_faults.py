"""Fault proofs with real processes: a relay SIGKILLed between publish and mark-sent, and
PostgreSQL restarted while a relay runs. Nothing is lost; duplicates are caught by the inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from db_helpers import SinkDriver, rows
from hexa_event import Context, Event
from hexa_event._sql.urls import async_url, sync_url
from hexa_event.inbox import Inbox
from hexa_event.outbox import Outbox, OutboxRelay

HERE = Path(__file__).resolve().parent
SRC = HERE.parent.parent / "src"

effects_md = MetaData()
effects = Table(
    "fault_effects",
    effects_md,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False),
)


def emit_events(url: str, count: int, *, keys: int = 10, start: int = 0) -> list[str]:
    outbox = Outbox()
    engine = create_engine(sync_url(url))
    ids: list[str] = []
    try:
        for first in range(start, start + count, 100):
            with engine.begin() as conn:
                ids += outbox.emit_many(
                    conn,
                    [
                        Event("orders", f"key-{n % keys}", payload={"n": n})
                        for n in range(first, min(start + count, first + 100))
                    ],
                )
    finally:
        engine.dispose()
    return ids


def relay_process(db: str, sink: str, mode: str, lease: float) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return subprocess.Popen(
        [sys.executable, str(HERE / "relay_proc.py"), db, sink, mode, str(lease)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_for_line(proc: subprocess.Popen[str], prefix: str, within: float) -> str:
    """Read the child's stdout until a line starts with ``prefix`` (deadline enforced)."""
    assert proc.stdout is not None
    result: list[str] = []

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(prefix):
                result.append(line)
                return

    import threading

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(within)
    if not result:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"relay process never printed {prefix!r}; stderr:\n{err[-3000:]}")
    return result[0]


async def consume_with_inbox(url: str, sink: list[tuple[str, str, bytes]]) -> tuple[int, int]:
    """Hand every record the sink holds (duplicates included) to an inbox-guarded handler."""
    engine = create_async_engine(async_url(url))
    async with engine.begin() as conn:
        await conn.run_sync(effects_md.create_all)
        await conn.execute(effects.delete())
    inbox = Inbox(engine)
    applied = skipped = 0
    for event_id, _key, _body in sink:

        async def effect(session: AsyncSession, eid: str = event_id) -> None:
            await session.execute(insert(effects).values(event_id=eid))

        ran, _ = await inbox.run(Context(event_id=event_id, handler_action="svc.apply"), effect)
        applied += ran
        skipped += not ran
    await engine.dispose()
    return applied, skipped


def assert_key_order(sink: list[tuple[str, str, bytes]], ids: list[str]) -> None:
    """First deliveries of each key come in emit order (re-sends may repeat older ones)."""
    position = {eid: n for n, eid in enumerate(ids)}
    firsts: dict[str, list[int]] = defaultdict(list)
    seen: set[str] = set()
    for event_id, key, _ in sink:
        if event_id not in seen:
            seen.add(event_id)
            firsts[key].append(position[event_id])
    for key, order in firsts.items():
        assert order == sorted(order), f"key {key} first deliveries out of order"


@pytest.mark.slow
async def test_relay_killed_between_publish_and_mark(db_url: str, tmp_path: Path) -> None:
    ids = emit_events(db_url, 300)
    sink_path = str(tmp_path / "sink.db")
    sink = SinkDriver(sink_path)

    stalled = relay_process(db_url, sink_path, "stall", lease=1.0)
    line = await asyncio.to_thread(wait_for_line, stalled, "PUBLISHED", 60)
    stalled.send_signal(signal.SIGKILL)  # after the broker has the batch, before mark-sent
    stalled.wait(timeout=30)
    assert line.strip() == "PUBLISHED 50"
    assert len(sink.read()) == 50
    assert rows(db_url, "SELECT count(*) FROM hexa_outbox WHERE sent_at IS NULL") == [(300,)]

    restarted = relay_process(db_url, sink_path, "drain", lease=1.0)
    await asyncio.to_thread(wait_for_line, restarted, "DRAINED", 120)
    assert restarted.wait(timeout=30) == 0

    delivered = sink.read()
    assert {r[0] for r in delivered} == set(ids)  # everything delivered
    assert len(delivered) == 350  # the killed relay's batch was sent again
    assert_key_order(delivered, ids)
    applied, skipped = await consume_with_inbox(db_url, delivered)
    assert (applied, skipped) == (300, 50)  # duplicates recognised: each effect once
    assert rows(db_url, "SELECT count(DISTINCT event_id), count(*) FROM fault_effects") == [
        (300, 300)
    ]
    assert rows(db_url, "SELECT count(*) FROM hexa_outbox WHERE sent_at IS NULL") == [(0,)]


async def _emit_with_retry(url: str, count: int, start: int, within: float) -> list[str]:
    deadline = time.monotonic() + within
    while True:
        try:
            return await asyncio.to_thread(emit_events, url, count, start=start)
        except DBAPIError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)  # PostgreSQL is still coming back: poll


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.disruptive
async def test_postgres_restarted_during_relay(pg_url: str, tmp_path: Path) -> None:
    from hexa_event_services import get_service

    service = get_service("postgres")
    if not service.url.endswith(":5432/hexa_event") and "HEXA_POSTGRES_URL" in os.environ:
        pytest.skip("restarting needs the PostgreSQL managed by scripts/services")
    ids = emit_events(pg_url, 3000)
    sink = SinkDriver(str(tmp_path / "sink.db"))
    relay = OutboxRelay(pg_url, sink, batch_size=20, concurrency=2, lease=5.0, poll_interval=0.1)
    task = asyncio.create_task(relay.run())
    try:
        deadline = time.monotonic() + 60
        while len(sink.read()) < 200:  # mid-stream
            assert time.monotonic() < deadline, "relay did not start"
            await asyncio.sleep(0.02)
        await asyncio.to_thread(service.restart, True)  # keep_data=True: committed rows stay
        ids += await _emit_with_retry(pg_url, 500, start=3000, within=60)
        deadline = time.monotonic() + 180
        while {r[0] for r in sink.read()} != set(ids):
            assert time.monotonic() < deadline, "not every event reached the sink"
            assert not task.done(), task
            await asyncio.sleep(0.1)
    finally:
        relay.stop()
        await asyncio.wait_for(task, 60)
    stats: Any = None
    deadline = time.monotonic() + 30
    while stats is None or stats.backlog:
        with contextlib.suppress(DBAPIError):
            stats = await relay.stats()
        assert time.monotonic() < deadline, stats
        if stats is None or stats.backlog:
            await asyncio.sleep(0.1)
    await relay.close()
    delivered = sink.read()
    assert_key_order(delivered, ids)
    applied, skipped = await consume_with_inbox(pg_url, delivered)
    assert applied == len(ids)
    assert skipped == len(delivered) - len(ids)
