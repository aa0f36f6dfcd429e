"""The CLI on one service's tables among several in a database: ``--schema``/``--table-prefix``
(or ``?schema=``/``?table_prefix=`` in the URL) for outbox migrate/stats/status/relay/clean,
inbox migrate/clean, and the URL query for doctor and dlq on the SQL driver."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, update

import hexa_event as he
from db_helpers import rows
from hexa_event._sql.clock import utcnow
from hexa_event.cli import main
from hexa_event.outbox import Outbox, sent_table, table_for

INJECTION = 'x"; drop table y; --'


def unique(stem: str) -> str:
    return f"{stem}_{uuid.uuid4().hex[:8]}"


def sync_engine(url: str):  # type: ignore[no-untyped-def]
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return create_engine(parsed)


def test_outbox_inbox_doctor_and_dlq_on_one_table_set(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = db_url  # SQLite and PostgreSQL, with the default outbox and inbox tables
    postgres = not db.startswith("sqlite")
    if postgres:
        names = {"schema": unique("s")}
        flags = ["--schema", names["schema"]]
        query = f"?schema={names['schema']}"
        target = f"{db}?schema={unique('ev')}"
    else:
        names = {"table_prefix": unique("t") + "_"}
        flags = ["--table-prefix", names["table_prefix"]]
        query = f"?table_prefix={names['table_prefix']}"
        target = f"{db}?table_prefix={unique('ev')}_"
    table = table_for(**names)

    assert main(["outbox", "migrate", "--db", db, *flags]) == 0
    assert f"{table.fullname} is ready" in capsys.readouterr().out
    engine = sync_engine(db)
    with engine.begin() as conn:
        ids = Outbox(**names).emit_many(
            conn, [he.Event("charge.dlq", f"k{i}", {"n": i}, id=f"ev-{i}") for i in range(3)]
        )
        Outbox().emit_many(conn, [he.Event("c", "k", i) for i in range(2)])  # default table

    assert main(["outbox", "stats", "--db", db + query, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["backlog"] == 3
    assert main(["outbox", "stats", "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["backlog"] == 2
    assert main(["outbox", "status", "--db", db, *flags, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["backlog"] == 3
    assert main(["outbox", "status", "--db", db + query, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["backlog"] == 3

    # Relay this outbox into an SQL log of its own table set in the same database.
    assert main(["outbox", "relay", "--db", db, *flags, "--to", target, "--once"]) == 0
    assert "sent 3 rows" in capsys.readouterr().out
    assert main(["outbox", "stats", "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["backlog"] == 2  # the default rows wait

    # dlq and doctor read the target's table set from its URL query, and only it.
    assert main(["dlq", "list", target, "--action", "charge", "--idle", "0.5", "--json"]) == 0
    assert sorted(row["id"] for row in json.loads(capsys.readouterr().out)) == ids
    assert main(["doctor", target, "--channel", "charge.dlq"]) == 0
    out = capsys.readouterr().out
    assert "the SQL driver's tables exist" in out
    assert "channel charge.dlq: has records" in out
    missing = f"{db}?table_prefix={unique('none')}_"
    assert main(["doctor", missing]) == 0
    assert "schema not migrated: missing tables" in capsys.readouterr().out

    with engine.begin() as conn:
        conn.execute(update(sent_table(table)).values(sent_at=utcnow() - timedelta(days=2)))
    assert main(["outbox", "clean", "--db", db, *flags, "--retention", "1d"]) == 0
    assert "deleted 3 rows" in capsys.readouterr().out
    engine.dispose()
    assert rows(db, "SELECT count(*) FROM hexa_outbox WHERE sent_at IS NULL") == [(2,)]

    assert main(["inbox", "migrate", "--db", db + query]) == 0
    assert "hexa_inbox is ready" in capsys.readouterr().out
    assert main(["inbox", "clean", "--db", db, *flags, "--retention", "1d"]) == 0
    assert "deleted 0 rows" in capsys.readouterr().out


def test_ddl_flags(capsys: pytest.CaptureFixture[str]) -> None:
    flags = ["--schema", "billing", "--table-prefix", "b_"]
    assert main(["outbox", "ddl", "--dialect", "postgresql", *flags]) == 0
    out = capsys.readouterr().out
    assert "CREATE SCHEMA IF NOT EXISTS billing;" in out
    assert "CREATE TABLE billing.b_hexa_outbox" in out
    assert main(["inbox", "ddl", "--dialect", "sqlite", "--table-prefix", "b_"]) == 0
    assert "CREATE TABLE b_hexa_inbox" in capsys.readouterr().out


def test_bad_names_are_refused_by_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 'app.db'}"
    relay = ["outbox", "relay", "--db", db, "--to", f"sqlite:///{tmp_path / 'ev.db'}", "--once"]
    assert main([*relay, "--table-prefix", INJECTION]) == 2
    err = capsys.readouterr().err
    assert "table_prefix" in err
    assert "lowercase letters" in err
    assert main(["outbox", "status", "--db", db, "--schema", INJECTION]) == 2
    assert "schema" in capsys.readouterr().err
    assert main(["outbox", "migrate", "--db", db, "--schema", "billing"]) == 2
    assert "PostgreSQL only" in capsys.readouterr().err
    assert main(["outbox", "stats", "--db", f"{db}?table_prefix=a_", "--table-prefix", "b_"]) == 2
    assert "give it once" in capsys.readouterr().err
    assert main(["doctor", f"{db}?schema=billing"]) == 5  # problems found
    assert "PostgreSQL only" in capsys.readouterr().out
    assert main(["dlq", "list", f"{db}?table_prefix=Bad", "--action", "a"]) != 0
    assert "lowercase letters" in capsys.readouterr().err
    assert not (tmp_path / "app.db").exists() or rows(
        db, "SELECT count(*) FROM sqlite_master WHERE name = 'y'"
    ) == [(0,)]
