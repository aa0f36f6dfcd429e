"""Dialect-specific statements and DDL text for PostgreSQL, SQLite and MySQL/MariaDB."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateIndex, CreateSchema, CreateTable

from ..errors import ConfigurationError


def upsert(table: Table, dialect: str) -> Any:
    """The dialect's INSERT with ``on_conflict_do_nothing``/``on_conflict_do_update``
    (PostgreSQL and SQLite)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)
    raise ConfigurationError(f"upserts are written for PostgreSQL and SQLite, not {dialect!r}")


def insert_ignoring_duplicates(table: Table, dialect: str) -> Any:
    """An INSERT that does nothing when the primary key exists (rowcount 0 then)."""
    if dialect in ("postgresql", "sqlite"):
        return upsert(table, dialect).on_conflict_do_nothing()
    if dialect in ("mysql", "mariadb"):
        return insert(table).prefix_with("IGNORE")
    raise ConfigurationError(f"supported databases are PostgreSQL, SQLite and MySQL, not {dialect}")


def dialect_named(name: str) -> Dialect:
    """A SQLAlchemy dialect to compile DDL for: postgresql, sqlite, mysql or mariadb."""
    from sqlalchemy.dialects import mysql, postgresql, sqlite

    if name == "postgresql":
        # asyncpg's compiler: the one the SQL driver runs with.
        from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg

        return PGDialect_asyncpg()  # type: ignore[no-untyped-call]
    dialects: dict[str, Any] = {
        "postgres": postgresql,
        "sqlite": sqlite,
        "mysql": mysql,
        "mariadb": mysql,
    }
    module = dialects.get(name.lower())
    if module is None:
        raise ConfigurationError(
            f"unknown dialect {name!r}; use one of postgresql, sqlite, mysql, mariadb"
        )
    return module.dialect()  # type: ignore[no-any-return]


def tables_ddl(tables: Sequence[Table], dialect: str) -> str:
    """``CREATE TABLE`` and ``CREATE INDEX`` statements of ``tables`` for ``dialect``,
    after ``CREATE SCHEMA IF NOT EXISTS`` for the schemas they live in."""
    compiled_for = dialect_named(dialect)
    parts: list[str] = []
    for schema in sorted({t.schema for t in tables if t.schema is not None}):
        create = CreateSchema(schema, if_not_exists=True)
        parts.append(str(create.compile(dialect=compiled_for)).strip() + ";")
    for table in tables:
        parts.append(str(CreateTable(table).compile(dialect=compiled_for)).strip() + ";")
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            parts.append(str(CreateIndex(index).compile(dialect=compiled_for)).strip() + ";")
    return "\n\n".join(parts) + "\n"
