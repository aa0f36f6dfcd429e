"""Issue 23 #1: a row the broker refuses for good (over its size limit) is parked with the
reason, and every other row is relayed once: nothing stalls behind it, nothing is sent twice.
Against the real brokers, whose drivers report each record's outcome."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select

import hexa_event as he
from db_helpers import RecordingDriver, reset_tables
from hexa_event._sql.urls import sync_url
from hexa_event.errors import InvalidEventError, NotStoredError, PartialPublishError
from hexa_event.outbox import Outbox, OutboxRelay, outbox_table, requeue_parked
from hexa_event.testing import Collector, eventually
from hexa_event_services import require_service

BIG = 9 * 1024 * 1024
"""Over each broker's default limit: Kafka's 1 MB, Pulsar's 5 MiB, NATS's 1 MiB."""


def target_url(target: str) -> str:
    require_service(target)
    env = os.environ.get
    if target == "kafka":
        return f"kafka://{env('HEXA_KAFKA_BOOTSTRAP', '127.0.0.1:9092')}"
    if target == "pulsar":
        return f"{env('HEXA_PULSAR_URL', 'pulsar://127.0.0.1:6650')}?admin_url=" + env(
            "HEXA_PULSAR_ADMIN_URL", "http://127.0.0.1:8080"
        )
    return (
        f"{env('HEXA_NATS_URL', 'nats://127.0.0.1:4222')}?stream=HEXA_TEST"
        "&subject_prefix=hexa-test&max_age=3600&consumer_inactive_threshold=600"
    )


LIMIT_WORDS = {"kafka": "message.max.bytes", "pulsar": "maxMessageSize", "nats": "max_payload"}


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("kafka", marks=pytest.mark.kafka),
        pytest.param("pulsar", marks=pytest.mark.pulsar),
        pytest.param("nats", marks=pytest.mark.nats),
    ],
)
async def test_an_oversized_row_is_parked_and_the_others_relayed_once(
    db_url: str, target: str
) -> None:
    channel = f"refused-{uuid.uuid4().hex[:8]}"
    bad = he.Event(channel, "big", {"blob": "x" * BIG})
    await _parked_and_the_others_relayed_once(
        db_url, target_url(target), channel, bad, LIMIT_WORDS[target]
    )


@pytest.mark.parametrize("log", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def test_a_row_the_sql_log_cannot_hold_is_parked(
    tmp_path: Path, log: str, request: pytest.FixtureRequest
) -> None:
    """The SQL log's limit: a channel over 255 characters (an SQLite outbox holds it)."""
    db_url = f"sqlite:///{tmp_path / 'outbox.db'}"
    reset_tables(db_url)
    url = (
        f"sqlite:///{tmp_path / 'log.db'}" if log == "sqlite" else request.getfixturevalue("pg_url")
    )
    channel = f"refused-{uuid.uuid4().hex[:8]}"
    bad = he.Event("c" * 300, "big", {"n": 0})
    await _parked_and_the_others_relayed_once(db_url, url, channel, bad, "255")


async def _parked_and_the_others_relayed_once(
    db_url: str, url: str, channel: str, bad: he.Event[Any], limit_word: str
) -> None:
    outbox = Outbox()
    engine = create_engine(sync_url(db_url))
    try:
        with engine.begin() as conn:
            big = outbox.emit(conn, bad)
            good = outbox.emit_many(conn, [he.Event(channel, f"k{i}", {"i": i}) for i in range(20)])
    finally:
        engine.dispose()

    conn_ = he.connect(url)
    try:
        # One publish call holds all 21 rows (concurrency=1), as in the issue.
        async with OutboxRelay(db_url, conn_, concurrency=1, retry_delay=0.2) as relay:
            assert await relay.drain(max_seconds=30) == 20
            stats = await relay.stats()
        assert (stats.backlog, stats.parked) == (0, 1)
        engine = create_engine(sync_url(db_url))
        try:
            with engine.connect() as c:
                t = outbox_table
                row = c.execute(
                    select(t.c.sent_at, t.c.last_error).where(t.c.event_id == big)
                ).one()
        finally:
            engine.dispose()
        assert row.sent_at is None
        assert row.last_error.startswith("parked: ")
        assert limit_word in row.last_error

        # Exactly once: after a sentinel of each key arrives, every earlier record of that
        # key (a duplicate included) has arrived too (per-key order, one member).
        got = Collector()
        receiver = conn_.receiver("svc")

        @receiver.subscribe(channel, action=f"act-{channel}")
        async def handle(_c: he.Context, msg: he.Message[Any]) -> None:
            got.add(msg.id)

        async with receiver:
            sentinels = await conn_.emitter().emit_many(
                [he.Event(channel, f"k{i}", {"sentinel": True}) for i in range(20)]
            )
            await eventually(lambda: set(sentinels) <= set(got.items), within=90)
        counts = Counter(got.items)
        assert big not in counts
        assert {i: counts[i] for i in good} == dict.fromkeys(good, 1)
    finally:
        await conn_.close()


class Refusing(RecordingDriver):
    """Refuses records with key ``bad`` (for good), stores the rest: per-record outcome."""

    def __init__(self, *, name_culprit: bool) -> None:
        super().__init__()
        self.name_culprit = name_culprit
        self.refusing = True

    async def publish(self, records: Any) -> None:
        self.calls += 1
        bad = {i for i, r in enumerate(records) if r.key == "bad" and self.refusing}
        if not bad:
            self.records.extend(records)
            return
        if not self.name_culprit:
            raise InvalidEventError("body", "refused before sending")
        self.records.extend(r for i, r in enumerate(records) if i not in bad)
        if len(records) == 1:
            raise NotStoredError("too large", limit="size")
        raise PartialPublishError(
            frozenset(i for i in range(len(records)) if i not in bad),
            {i: NotStoredError("too large", limit="size") for i in bad},
        )


@pytest.mark.parametrize("name_culprit", [True, False])
async def test_a_refused_row_does_not_hold_back_its_batch(db_url: str, name_culprit: bool) -> None:
    outbox = Outbox()
    engine = create_engine(sync_url(db_url))
    try:
        with engine.begin() as conn:
            outbox.emit(conn, he.Event("c", "k1", {"n": 0}))
            outbox.emit(conn, he.Event("c", "bad", {"n": 1}))
            ids = outbox.emit_many(conn, [he.Event("c", f"k{i % 3}", {"n": i}) for i in range(9)])
            outbox.emit(conn, he.Event("c", "bad", {"n": 2}))  # later rows of its key go on
    finally:
        engine.dispose()
    driver = Refusing(name_culprit=name_culprit)
    async with OutboxRelay(db_url, driver, concurrency=2, retry_delay=0.1) as relay:
        assert await relay.drain(max_seconds=20) == 10
        stats = await relay.stats()
        assert (stats.backlog, stats.parked) == (0, 2)
        sent = Counter(r.headers["HEXA_EVENT_ID"].decode() for r in driver.records)
        assert set(ids) <= set(sent)
        assert set(sent.values()) == {1}
        # Once the cause is fixed, parked rows go again.
        assert await requeue_parked(relay.engine) == 2
        driver.refusing = False
        assert await relay.drain(max_seconds=20) == 2
        assert (await relay.stats()).parked == 0
    assert [r.key for r in driver.records[-2:]] == ["bad", "bad"]
