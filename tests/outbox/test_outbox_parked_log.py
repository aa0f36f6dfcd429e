"""Rows parked in a batch are logged in one ERROR line per reason, naming the first ids: a
line per row was 1,000 lines for a batch refused by one cause, and again every lease while
the park itself could not be written (a log flood hiding what else happened)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

from db_helpers import RecordingDriver, outbox_emit
from hexa_event import Event
from hexa_event.driver import RawRecord
from hexa_event.errors import NotStoredError, PartialPublishError
from hexa_event.outbox import OutboxRelay


class TooBig(RecordingDriver):
    async def publish(self, records: Sequence[RawRecord]) -> None:
        raise PartialPublishError(
            frozenset(), {i: NotStoredError("too big (test)") for i in range(len(records))}
        )


async def test_a_parked_batch_is_one_log_line(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    outbox_emit(db_url, [Event("orders", f"k{n}", {"n": n}) for n in range(25)])
    with caplog.at_level(logging.ERROR, logger="hexa_event.outbox"):
        async with OutboxRelay(db_url, TooBig(), concurrency=1) as relay:
            await relay.drain(max_seconds=20)
            assert (await relay.stats()).parked == 25
    lines = [r.getMessage() for r in caplog.records if "parked" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "parked 25 row(s) (" in lines[0], lines[0]
    assert "and 15 more" in lines[0], lines[0]
    assert "too big (test)" in lines[0]
