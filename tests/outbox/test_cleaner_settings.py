"""A cleaner's batch size is bound by what PostgreSQL binds as a LIMIT (a 32-bit integer):
a larger one is refused when the cleaner is made, naming the option, where it made every
run fail with the database's error (forever, every ``interval``). A retention too long for
a datetime expires nothing, where every run failed."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from hexa_event.errors import ConfigurationError
from hexa_event.inbox import InboxCleaner
from hexa_event.outbox import OutboxCleaner


@pytest.mark.parametrize("cleaner", [OutboxCleaner, InboxCleaner])
@pytest.mark.parametrize("bad", [0, 2**31, 3_000_000_000, 1.5, True])
def test_batch_sizes_the_database_cannot_bind_are_refused(
    tmp_path: Path, cleaner: type[OutboxCleaner | InboxCleaner], bad: object
) -> None:
    with pytest.raises(ConfigurationError, match=f"{cleaner.__name__} batch_size"):
        cleaner(f"sqlite:///{tmp_path / 'x.db'}", batch_size=bad)  # type: ignore[arg-type]


@pytest.mark.postgres
async def test_the_largest_batch_size_cleans_on_postgresql(pg_url: str) -> None:
    for cleaner in (OutboxCleaner(pg_url, batch_size=2**31 - 1), InboxCleaner(pg_url)):
        async with cleaner:
            assert await cleaner.run_once() == 0


@pytest.mark.parametrize("cleaner", [OutboxCleaner, InboxCleaner])
async def test_a_retention_reaching_past_the_year_1_expires_nothing(
    db_url: str, cleaner: type[OutboxCleaner | InboxCleaner]
) -> None:
    """``--retention 999999d`` (the command line takes up to 999999999 days): the cutoff
    would be before the year 1, which raised OverflowError at every run."""
    async with cleaner(db_url, retention=timedelta(days=999_999)) as forever:
        assert await forever.run_once() == 0
