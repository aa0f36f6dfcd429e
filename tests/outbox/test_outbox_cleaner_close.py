"""A cleaner closed while it runs opens no connection afterwards: close() disposed the
engine it owns, and a connection opened after that is nobody's to close."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event

from hexa_event._sql.cleaner import BatchCleaner
from hexa_event.outbox import OutboxCleaner


async def test_a_cleaner_closed_mid_run_opens_no_connection_after_close(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    deletes = BatchCleaner.run_once
    opened_after_close: list[Any] = []

    async def closed_meanwhile(self: BatchCleaner) -> int:
        """The expired rows deleted, then the cleaner closed (a shutdown) mid-run."""
        deleted = await deletes(self)
        await self.close()
        event.listen(
            self.engine.sync_engine, "connect", lambda conn, _rec: opened_after_close.append(conn)
        )
        return deleted

    monkeypatch.setattr(BatchCleaner, "run_once", closed_meanwhile)
    cleaner = OutboxCleaner(db_url, retention=timedelta(days=7))
    assert await cleaner.run_once() == 0
    assert opened_after_close == [], "the closed cleaner opened a connection"
    assert cleaner.health()["state"] == "closed"
