"""The hexa-event command: DDL, migrate, relay --once, clean, stats; no passwords shown."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, update

from db_helpers import RecordingDriver, rows
from hexa_event import Event, register_driver
from hexa_event._sql.clock import utcnow
from hexa_event.cli import main, parse_duration
from hexa_event.outbox import Outbox, outbox_table, sent_table


def test_ddl(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["outbox", "ddl", "--dialect", "postgresql"]) == 0
    out = capsys.readouterr().out
    assert "CREATE TABLE hexa_outbox" in out
    assert "BYTEA" in out
    assert main(["inbox", "ddl", "--dialect", "sqlite"]) == 0
    assert "CREATE TABLE hexa_inbox" in capsys.readouterr().out


def test_durations() -> None:
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration("250ms") == timedelta(milliseconds=250)
    assert parse_duration("90") == timedelta(seconds=90)
    with pytest.raises(Exception, match="bad duration"):
        parse_duration("soon")


def test_migrate_relay_stats_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 'app.db'}"
    assert main(["outbox", "migrate", "--db", db]) == 0
    assert main(["inbox", "migrate", "--db", db]) == 0
    engine = create_engine(db)
    with engine.begin() as conn:
        ids = Outbox().emit_many(conn, [Event("c", f"k{i}", payload=i) for i in range(5)])
    capsys.readouterr()

    assert main(["outbox", "stats", "--db", db, "--json"]) == 0
    assert '"backlog": 5' in capsys.readouterr().out

    driver = RecordingDriver()

    def factory(url: str, **options: Any) -> RecordingDriver:
        return driver

    register_driver("cli-recording", factory)
    assert main(["outbox", "relay", "--db", db, "--to", "cli-recording://", "--once"]) == 0
    assert "sent 5 rows" in capsys.readouterr().out
    assert driver.ids() == ids

    with engine.begin() as conn:
        log = sent_table(outbox_table)
        conn.execute(update(log).values(sent_at=utcnow() - timedelta(days=2)))
    engine.dispose()
    assert main(["outbox", "clean", "--db", db, "--retention", "1d", "--batch-size", "2"]) == 0
    assert "deleted 5 rows" in capsys.readouterr().out
    assert rows(db, "SELECT count(*) FROM hexa_outbox") == [(0,)]
    assert main(["inbox", "clean", "--db", db, "--retention", "1d"]) == 0
    assert "deleted 0 rows" in capsys.readouterr().out


def test_errors_hide_passwords(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://app:s3cret-pw@127.0.0.1:1/nowhere"
    assert main(["outbox", "stats", "--db", url]) == 1
    captured = capsys.readouterr()
    assert "error" in captured.err
    assert "s3cret-pw" not in captured.err + captured.out
    assert main(["outbox", "migrate", "--db", url]) == 1
    captured = capsys.readouterr()
    assert "s3cret-pw" not in captured.err + captured.out


def test_missing_db_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("HEXA_EVENT_DB", raising=False)
    for argv in (["outbox", "status"], ["outbox", "migrate"], ["outbox", "relay"]):
        assert main(argv) == 2, argv
        assert "--db" in capsys.readouterr().err


def test_relay_refuses_a_target_that_is_not_persistent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 9 #3: a broker that dies with the process (memory://) is refused."""
    from hexa_event.driver import Features

    class Volatile(RecordingDriver):
        features = Features(name="volatile", persistent=False)

    register_driver("cli-volatile", lambda url, **options: Volatile())
    db = f"sqlite:///{tmp_path / 'app.db'}"
    assert main(["outbox", "migrate", "--db", db]) == 0
    capsys.readouterr()
    assert main(["outbox", "relay", "--db", db, "--to", "cli-volatile://", "--once"]) == 2
    assert "persistent" in capsys.readouterr().err


def test_relay_once_fails_when_publishing_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 9 #13: ``--once`` exits non-zero when publishes failed."""
    db = f"sqlite:///{tmp_path / 'app.db'}"
    assert main(["outbox", "migrate", "--db", db]) == 0
    engine = create_engine(db)
    with engine.begin() as conn:
        Outbox().emit_many(conn, [Event("c", f"k{i}", payload=i) for i in range(3)])
    engine.dispose()
    driver = RecordingDriver()
    driver.fail_next = 100
    register_driver("cli-failing", lambda url, **options: driver)
    capsys.readouterr()
    assert main(["outbox", "relay", "--db", db, "--to", "cli-failing://", "--once"]) == 1
    assert "failed to publish" in capsys.readouterr().err
    assert main(["outbox", "stats", "--db", db, "--json"]) == 0
    assert '"backlog": 3' in capsys.readouterr().out


def test_relay_once_shows_progress_while_draining(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``outbox relay --once`` prints rows relayed, rate and backlog while it drains."""
    db = f"sqlite:///{tmp_path / 'app.db'}"
    assert main(["outbox", "migrate", "--db", db]) == 0
    engine = create_engine(db)
    with engine.begin() as conn:
        Outbox().emit_many(conn, [Event("c", f"k{i}", payload=i) for i in range(60)])
    engine.dispose()

    class SlowDriver(RecordingDriver):
        async def publish(self, records: Any) -> None:
            await asyncio.sleep(0.05)
            await super().publish(records)

    register_driver("cli-slow", lambda url, **options: SlowDriver())
    capsys.readouterr()
    args = ["--db", db, "--to", "cli-slow://", "--once", "--batch-size", "5"]
    assert main(["outbox", "relay", *args, "--concurrency", "1", "--progress", "100ms"]) == 0
    captured = capsys.readouterr()
    assert "sent 60 rows" in captured.out
    assert "relayed" in captured.err
    assert "backlog" in captured.err
