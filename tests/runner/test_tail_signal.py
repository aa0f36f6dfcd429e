"""``hexa-event tail`` stopped by SIGTERM deletes its throwaway group, so on SQL ``prune``
can delete every row the tail read (a group left behind pins the log for good)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import IO, Any

from runner_helpers import emit

import hexa_event as he
from db_helpers import rows
from hexa_event.testing import eventually


def start_tail(url: str, channel: str, stdout: IO[bytes], stderr: IO[bytes], *more: str) -> Any:
    argv = [sys.executable, "-m", "hexa_event.cli", "tail", url, channel, "--json", *more]
    return subprocess.Popen(argv, stdout=stdout, stderr=stderr, env=dict(os.environ))


async def sigterm(tail: Any) -> int:
    """SIGTERM the tail and return its exit status (killed if still running after 60 s)."""
    tail.send_signal(signal.SIGTERM)
    try:
        return int(await asyncio.to_thread(tail.wait, 60))
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()


async def test_tail_cleans_its_group_on_sigterm(sql_engine: str, tmp_path: Path) -> None:
    channel = f"tail-{uuid.uuid4().hex[:8]}"
    await emit(sql_engine, channel, range(5))
    out, err = tmp_path / "out", tmp_path / "err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        tail = start_tail(sql_engine, channel, stdout, stderr)
        try:
            await eventually(lambda: "following" in err.read_text(), within=60, what="tail up")
            await emit(sql_engine, channel, range(5, 10))
            await eventually(
                lambda: out.read_text().count('"channel"') == 5, within=60, what="5 tailed"
            )
        finally:
            code = await sigterm(tail)
    assert code == 0, err.read_text()[-3000:]
    assert "Traceback" not in err.read_text()
    groups = rows(
        sql_engine,
        "SELECT count(*) FROM hexa_positions WHERE group_name LIKE 'hexa-event-tail-%' "
        "AND channel = :c",
        c=channel,
    )
    log = err.read_text()[-3000:]
    assert groups[0][0] == 0, f"the tail's group is still there; its stderr:\n{log}"

    await emit(sql_engine, channel, range(10, 15))
    conn = he.connect(sql_engine)
    try:
        await conn.driver.prune(0)  # type: ignore[attr-defined]
    finally:
        await conn.close()
    left = rows(sql_engine, "SELECT count(*) FROM hexa_log WHERE channel = :c", c=channel)
    assert left[0][0] == 0, "prune kept rows: a group pins the log"


async def test_tail_stopped_mid_burst_cleans_its_group(sql_engine: str, tmp_path: Path) -> None:
    """SIGTERM while the tail is busy printing and settling a backlog: it finishes the batch
    in hand, exits 0 and still deletes its group (a signal that cut a settlement short once
    left the group's positions behind)."""
    channel = f"tail-{uuid.uuid4().hex[:8]}"
    await emit(sql_engine, channel, range(3000))
    for attempt in range(3):
        out, err = tmp_path / f"out{attempt}", tmp_path / f"err{attempt}"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            tail = start_tail(sql_engine, channel, stdout, stderr, "--from-beginning")
            try:
                await eventually(
                    lambda out=out: out.exists() and out.read_text().count('"channel"') >= 150,
                    within=60,
                    what="the tail busy with the backlog",
                )
            finally:
                code = await sigterm(tail)
        log = err.read_text()
        assert code == 0, log[-3000:]
        assert "Traceback" not in log, log[-3000:]
        assert "WARNING" not in log.upper(), log[-3000:]
        printed = out.read_text().count('"channel"')
        assert printed < 3000, "the tail read everything before the signal: no burst to cut"
        left = rows(
            sql_engine,
            "SELECT count(*) FROM hexa_positions WHERE group_name LIKE 'hexa-event-tail-%' "
            "AND channel = :c",
            c=channel,
        )
        assert left[0][0] == 0, f"attempt {attempt}: the tail's group is still there\n{log}"
