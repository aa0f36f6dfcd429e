"""Absurd numbers given to the relay, its helpers and the cleaners (0, negative, NaN, a
float where a count is due, a text, 400 digits) are refused naming what to change, where
they failed every batch while the relay ran, raised TypeError or OverflowError, or did
something else than asked."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, update

from db_helpers import RecordingDriver, outbox_emit
from hexa_event import Event
from hexa_event._sql.urls import sync_url
from hexa_event.errors import ConfigurationError
from hexa_event.inbox import InboxCleaner
from hexa_event.outbox import (
    OutboxCleaner,
    OutboxRelay,
    outbox_stats,
    outbox_table,
    requeue_parked,
)
from hexa_event.outbox.claims import PARKED, PARKED_UNTIL


def repr_of(value: object) -> str:
    return repr(value)[:16]


def emit(url: str, keys: list[str]) -> list[str]:
    return outbox_emit(url, [Event("orders", key, {"n": n}) for n, key in enumerate(keys)])


@pytest.mark.parametrize(
    "option",
    [
        {"batch_size": 2.5},
        {"batch_size": True},
        {"concurrency": math.nan},
        {"concurrency": 2.5},
        {"concurrency": "4"},
        {"pipeline": math.nan},
        {"pipeline": 10**400},
        {"pipeline": 0},
        {"lease": "30"},
        {"retry_delay": -1},
        {"poll_interval": 10**400},
    ],
    ids=lambda option: "-".join(f"{k}={v!r}"[:24] for k, v in option.items()),
)
def test_the_relay_refuses_counts_that_are_not_whole_numbers(
    tmp_path: Path, option: dict[str, Any]
) -> None:
    """NaN or 2.5 as a concurrency made every batch fail (``range(nan)``) while the relay
    ran; a text raised TypeError, not our error naming the option."""
    name = next(iter(option))
    with pytest.raises(ConfigurationError, match=name):
        OutboxRelay(f"sqlite:///{tmp_path / 'app.db'}", RecordingDriver(), **option)


@pytest.mark.parametrize("bad", [math.nan, -1, 10**400, math.inf], ids=repr_of)
async def test_drain_refuses_an_absurd_max_seconds(tmp_path: Path, bad: float) -> None:
    """NaN or a negative number returned 0 at once, as if nothing were ready; 400 digits
    raised OverflowError."""
    async with OutboxRelay(f"sqlite:///{tmp_path / 'app.db'}", RecordingDriver()) as relay:
        with pytest.raises(ConfigurationError, match="max_seconds"):
            await relay.drain(max_seconds=bad)


@pytest.mark.parametrize("bad", [0, -5, 2.5, math.nan, 10**400], ids=repr_of)
async def test_outbox_stats_refuses_an_absurd_limit(db_url: str, bad: Any) -> None:
    """A negative limit read every row (SQLite's LIMIT -4 is none) and said the backlog
    was -5."""
    emit(db_url, ["a", "b"])
    async with OutboxRelay(db_url, RecordingDriver()) as relay:
        with pytest.raises(ConfigurationError, match="limit"):
            await outbox_stats(relay.engine, limit=bad)


@pytest.mark.parametrize("bad", ["12", [1, "2"], [10**400], [True]], ids=repr_of)
async def test_requeue_parked_refuses_ids_that_are_not_row_ids(db_url: str, bad: Any) -> None:
    """A text is a sequence: ``ids="12"`` requeued rows 1 and 2 on SQLite (its digits,
    compared as numbers); 400 digits raised OverflowError."""
    emit(db_url, ["a", "b", "c"])
    engine = create_engine(sync_url(db_url))
    try:
        with engine.begin() as conn:
            conn.execute(update(outbox_table).values(lease_token=PARKED, lease_until=PARKED_UNTIL))
    finally:
        engine.dispose()
    async with OutboxRelay(db_url, RecordingDriver()) as relay:
        with pytest.raises(ConfigurationError, match="requeue_parked ids"):
            await requeue_parked(relay.engine, ids=bad)
        stats = await relay.stats()
    assert (stats.backlog, stats.parked) == (0, 3)


@pytest.mark.parametrize("cleaner", [OutboxCleaner, InboxCleaner])
@pytest.mark.parametrize("bad", [10**400, "60"], ids=repr_of)
def test_the_cleaners_refuse_an_interval_asyncio_cannot_wait(
    tmp_path: Path, cleaner: Any, bad: Any
) -> None:
    """400 digits were taken, and ``run()`` died of OverflowError at its first pause."""
    with pytest.raises(ConfigurationError, match="interval must be positive"):
        cleaner(f"sqlite:///{tmp_path / 'app.db'}", interval=bad)
