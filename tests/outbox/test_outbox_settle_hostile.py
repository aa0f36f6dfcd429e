"""What settling a batch writes into the rows comes from the broker: an error text with a
NUL (PostgreSQL's text refuses it) or a lone surrogate (no UTF-8 holds it) made every
write parking or holding back the rows fail, so they came back, were refused again, and
so on, while ``health()`` said all was well. The text is now stored escaped, and a park or
hold that cannot be written turns the relay unhealthy, with the reason."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy import create_engine, text

from db_helpers import RecordingDriver, outbox_emit, rows
from hexa_event import Event
from hexa_event._sql.urls import sync_url
from hexa_event.driver import RawRecord
from hexa_event.errors import DriverError, NotStoredError, PartialPublishError
from hexa_event.outbox import OutboxRelay
from hexa_event.testing import eventually

ODD = "the broker echoed \x00 and \udc80 (test)"
STORED = "the broker echoed \\x00 and \\udc80 (test)"


def emit(url: str, count: int) -> list[str]:
    return outbox_emit(url, [Event("orders", f"k{n}", {"n": n}) for n in range(count)])


class Refusing(RecordingDriver):
    """Refuses every record: for good (``NotStoredError``) or for now (``DriverError``),
    with an error text of ``ODD``."""

    def __init__(self, *, for_good: bool) -> None:
        super().__init__()
        self.for_good = for_good

    async def publish(self, records: Sequence[RawRecord]) -> None:
        self.calls += 1
        if not self.for_good:
            raise DriverError(ODD)
        raise PartialPublishError(
            frozenset(), {i: NotStoredError(ODD) for i in range(len(records))}
        )


async def test_rows_refused_with_an_odd_error_text_are_parked(db_url: str) -> None:
    emit(db_url, 3)
    driver = Refusing(for_good=True)
    async with OutboxRelay(db_url, driver, lease=1.0, concurrency=1) as relay:
        assert await relay.drain(max_seconds=20) == 0
        stats = await relay.stats()
    assert (stats.backlog, stats.parked, driver.calls) == (0, 3, 1)
    errors = rows(db_url, "SELECT DISTINCT last_error FROM hexa_outbox")
    assert errors == [(f"parked: {STORED}",)], errors


async def test_rows_failing_with_an_odd_error_text_wait_to_retry(db_url: str) -> None:
    emit(db_url, 3)
    driver = Refusing(for_good=False)
    async with OutboxRelay(db_url, driver, lease=1.0, retry_delay=60, concurrency=1) as relay:
        assert await relay.drain(max_seconds=20) == 0
    assert driver.calls == 1  # held back for retry_delay, not claimed again
    errors = rows(db_url, "SELECT DISTINCT last_error FROM hexa_outbox")
    assert errors == [(f"DriverError: {STORED}",)], errors


REFUSE_PARKING = {
    "sqlite": [
        "CREATE TRIGGER hexa_test_refuse_park BEFORE UPDATE ON hexa_outbox "
        "WHEN NEW.lease_token = 'parked' BEGIN SELECT RAISE(ABORT, 'parking refused (test)'); "
        "END"
    ],
    "postgresql": [
        "CREATE OR REPLACE FUNCTION hexa_test_refuse_park() RETURNS trigger LANGUAGE plpgsql "
        "AS $$ BEGIN RAISE EXCEPTION 'parking refused (test)'; END $$",
        "CREATE TRIGGER hexa_test_refuse_park BEFORE UPDATE ON hexa_outbox FOR EACH ROW "
        "WHEN (NEW.lease_token = 'parked') EXECUTE FUNCTION hexa_test_refuse_park()",
    ],
}


class ParkingRefused:
    """A trigger refusing to park rows, while in the ``with`` block or until :meth:`allow`."""

    def __init__(self, url: str) -> None:
        sync = sync_url(url)
        # SQLite: the running relay writes every poll; wait for its lock (pysqlite waits 5 s,
        # which a loaded CI machine outlasted: "database is locked" on DROP TRIGGER).
        sqlite = sync.get_backend_name() == "sqlite"
        self.engine = create_engine(sync, connect_args={"timeout": 60} if sqlite else {})
        self.dialect = self.engine.dialect.name

    def __enter__(self) -> ParkingRefused:
        with self.engine.begin() as conn:
            for sql in REFUSE_PARKING[self.dialect]:
                conn.execute(text(sql))
        return self

    def allow(self) -> None:
        on = " ON hexa_outbox" if self.dialect == "postgresql" else ""
        with self.engine.begin() as conn:
            conn.execute(text(f"DROP TRIGGER IF EXISTS hexa_test_refuse_park{on}"))

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.allow()
        finally:
            self.engine.dispose()


async def test_a_park_that_cannot_be_written_turns_the_relay_unhealthy(db_url: str) -> None:
    emit(db_url, 2)
    driver = Refusing(for_good=True)
    # A lease of 2 s: a refused park is retried with a growing pause within it, so the
    # test's own DROP TRIGGER finds SQLite's write lock free (0.3 s kept SQLite busy with
    # retries and claims; on a loaded machine the DROP waited past its busy timeout).
    relay = OutboxRelay(
        db_url, driver, lease=2.0, poll_interval=0.05, unhealthy_after=0.3, concurrency=1
    )
    with ParkingRefused(db_url) as refusing:
        async with relay:
            running = asyncio.create_task(relay.run())
            try:
                await eventually(
                    lambda: "parking rows" in relay.health()["reason"], what="unhealthy"
                )
                health = relay.health()
                assert not health["healthy"]
                assert "parking or holding back rows has failed" in health["reason"], health
                assert "parking refused (test)" in health["reason"], health
                assert health["parked"] >= 2  # refused, but not parked: they came back

                refusing.allow()  # the database takes parks again
                await eventually(lambda: relay.health()["healthy"], what="healthy again")
            finally:
                relay.stop()
                await asyncio.wait_for(running, 30)
    parked = "SELECT count(*) FROM hexa_outbox WHERE lease_token = 'parked'"
    assert rows(db_url, parked) == [(2,)]
