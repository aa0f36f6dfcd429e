"""The relay's backlog sample is bounded (at most ``backlog_limit`` rows read, "at least N"
beyond), and ``max_unsent_age`` turns a relay unhealthy while one key's rows keep failing
although the other keys' go out (each batch that goes out ends the publishing failure
streak, so the failure streak alone never says it)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from db_helpers import RecordingDriver, outbox_emit
from hexa_event import Event
from hexa_event.driver import RawRecord
from hexa_event.errors import ConfigurationError, DriverError, PartialPublishError
from hexa_event.outbox import OutboxRelay, outbox_stats
from hexa_event.testing import eventually

FAST = {"unhealthy_after": 0.3, "retry_delay": 0.05, "poll_interval": 0.05, "lease": 2.0}


def emit(url: str, events: Sequence[Event[Any]]) -> list[str]:
    return outbox_emit(url, events)


@contextlib.asynccontextmanager
async def running(relay: OutboxRelay) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(relay.run())
    try:
        yield task
    finally:
        relay.stop()
        await asyncio.wait_for(task, 30)


async def test_the_backlog_sample_reads_at_most_backlog_limit_rows(db_url: str) -> None:
    emit(db_url, [Event("orders", f"k{n % 4}", {"n": n}) for n in range(25)])
    async with OutboxRelay(db_url, RecordingDriver(), backlog_limit=10) as relay:
        stats = await relay.stats()
        assert (stats.backlog, stats.backlog_at_least, stats.parked) == (10, True, 0)
        assert stats.oldest_unsent_age is not None
        exact = await outbox_stats(relay.engine, relay.table)
        assert (exact.backlog, exact.backlog_at_least) == (25, False)
        assert exact.oldest_unsent_age is not None
        assert abs(exact.oldest_unsent_age - stats.oldest_unsent_age) < 1.0
        relay.backlog_limit = 25  # exactly the backlog: not "at least"
        stats = await relay.stats()
        assert (stats.backlog, stats.backlog_at_least) == (25, False)
        assert await relay.drain(max_seconds=20) == 25
        stats = await relay.stats()
        assert (stats.backlog, stats.backlog_at_least, stats.oldest_unsent_age) == (0, False, None)


@pytest.mark.parametrize(
    "options",
    [{"backlog_limit": 0}, {"backlog_limit": 1.5}, {"max_unsent_age": 0}, {"max_unsent_age": -1}],
)
def test_bad_backlog_options_are_refused(options: dict[str, Any]) -> None:
    name = next(iter(options))
    with pytest.raises(ConfigurationError, match=name):
        OutboxRelay("sqlite:///:memory:", RecordingDriver(), **options)


class RefusingKey(RecordingDriver):
    """Stores every record but those of key ``bad`` (a channel it cannot reach, say)."""

    def __init__(self) -> None:
        super().__init__()
        self.refusing = True

    async def publish(self, records: Sequence[RawRecord]) -> None:
        bad = {i for i, r in enumerate(records) if self.refusing and r.key == "bad"}
        await super().publish([r for i, r in enumerate(records) if i not in bad])
        if bad:
            raise PartialPublishError(
                frozenset(range(len(records))) - bad,
                {i: DriverError("injected: this key's channel is unreachable") for i in bad},
            )


async def test_a_key_whose_rows_always_fail_turns_the_relay_unhealthy(db_url: str) -> None:
    emit(db_url, [Event("orders", "bad", {"n": 0}), Event("orders", "k", {"n": 0})])
    driver = RefusingKey()
    relay = OutboxRelay(db_url, driver, stats_interval=0.05, max_unsent_age=0.5, **FAST)

    async def other_keys_go_on() -> None:
        for n in range(1, 10**6):
            await asyncio.to_thread(emit, db_url, [Event("orders", "k", {"n": n})])
            await asyncio.sleep(0.05)

    async with relay, running(relay):
        feeder = asyncio.create_task(other_keys_go_on())
        try:
            # Unhealthy while the other key's rows go out (on a loaded machine the first of
            # them may take longer than max_unsent_age to go).
            await eventually(
                lambda: (
                    "oldest unsent row" in relay.health()["reason"]
                    and relay.health()["published"] >= 1
                ),
                what="unhealthy while other rows go out",
            )
            health = relay.health()
            assert not health["healthy"]
            assert (health["alive"], health["stalled"]) == (True, False)
            assert health["oldest_unsent_age"] > 0.5
            assert health["published"] >= 1  # the other key's rows went out meanwhile

            driver.refusing = False  # the channel is reachable again
            await eventually(lambda: relay.health()["healthy"], what="healthy again")
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
    assert [r.key for r in driver.records].count("bad") == 1
