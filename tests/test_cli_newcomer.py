"""Mistakes of a first hour with the CLI: a broker URL given where the outbox's or inbox's
database belongs is bad usage naming the fix, not a SQLAlchemy plugin error."""

from __future__ import annotations

import pytest

from hexa_event.cli import main


@pytest.mark.parametrize(
    "argv",
    [
        ["outbox", "status", "--db", "kafka://127.0.0.1:1"],
        ["outbox", "relay", "--db", "nats://127.0.0.1:1", "--to", "memory://"],
        ["outbox", "migrate", "--db", "pulsar://127.0.0.1:1"],
        ["inbox", "clean", "--db", "stan+tls://127.0.0.1:1", "--retention", "7d"],
    ],
)
def test_a_broker_url_as_the_database_is_bad_usage_naming_the_fix(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--db takes the SQL database" in err
    assert "Can't load plugin" not in err


def test_the_broker_url_is_refused_without_its_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["outbox", "status", "--db", "kafka://user:s3cr3t-pw@127.0.0.1:1"]) == 2
    assert "s3cr3t-pw" not in capsys.readouterr().err


@pytest.mark.parametrize("package", ["outbox", "inbox"])
def test_ddl_takes_postgres_as_the_urls_do(
    package: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`postgres://` URLs work everywhere; `--dialect postgres` was refused (exit 2)."""
    assert main([package, "ddl", "--dialect", "postgresql"]) == 0
    expected = capsys.readouterr().out
    assert main([package, "ddl", "--dialect", "postgres"]) == 0
    assert capsys.readouterr().out == expected
