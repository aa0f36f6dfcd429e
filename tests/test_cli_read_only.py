"""Issue 20 #4 and #7: read-only commands never create a SQLite database, and ``dlq list``
on a SQLite file stops at the end of the log instead of waiting out ``--idle``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

import hexa_event as he
from hexa_event.cli import main
from hexa_event.testing import eventually


@pytest.mark.parametrize(
    "argv",
    [
        ["dlq", "list", "{url}", "--action", "a"],
        ["dlq", "show", "{url}", "--action", "a", "--id", "x"],
        ["dlq", "replay", "{url}", "--action", "a"],
        ["tail", "{url}", "orders", "--idle", "0.2"],
        ["outbox", "status", "--db", "{url}"],
        ["outbox", "stats", "--db", "{url}"],
    ],
    ids=["dlq-list", "dlq-show", "dlq-replay", "tail", "outbox-status", "outbox-stats"],
)
def test_read_only_commands_refuse_a_missing_sqlite_file(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "typo.db"
    code = main([part.format(url=f"sqlite:///{db}") for part in argv])
    assert code == 4  # docs/cli.md: not found
    assert not db.exists()
    err = capsys.readouterr().err
    assert "no SQLite database at" in err
    assert "sqlite:////absolute/app.db" in err


async def test_dlq_list_on_sqlite_stops_at_the_end_of_the_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    conn = he.connect(url)
    receiver = conn.receiver("svc")

    def fail(ctx: Any, msg: Any) -> None:
        raise he.PermanentError("bad order")

    receiver.subscribe("orders", action="bill", handler=fail)
    async with receiver:
        await conn.emitter().emit(he.Event("orders", "k", {"n": 1}))
        info = receiver.subscriptions["bill"]
        await eventually(lambda: info.counters.dead_lettered == 1, within=20, what="letter")
    await conn.close()

    began = time.monotonic()
    code = await asyncio.to_thread(main, ["dlq", "list", url, "--action", "bill", "--idle", "20"])
    took = time.monotonic() - began
    assert code == 0
    assert "1 pending dead letters of bill" in capsys.readouterr().out
    assert took < 10, f"dlq list took {took:.1f}s: it waited out --idle 20"
