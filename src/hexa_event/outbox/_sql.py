"""Small SQL helpers shared by the outbox and the inbox (private).

Database URLs are normalised to an asyncio driver (``postgresql://`` -> asyncpg,
``sqlite://`` -> aiosqlite) and only ever shown with the password hidden.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ..errors import ConfigurationError

_ASYNC_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "mysql": "mysql+aiomysql",
    "mariadb": "mariadb+aiomysql",
}
_SYNC_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "sqlite": "sqlite",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (every timestamp column holds UTC)."""
    return datetime.now(UTC)


def _parse(url: str | URL) -> URL:
    try:
        return make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(
            "not a database URL (expected e.g. postgresql://user@host/db or sqlite:///app.db)"
        ) from exc


def redact(url: str | URL) -> str:
    """The URL as text with any password replaced by ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def async_url(url: str | URL) -> URL:
    """``url`` with an asyncio driver when it names none (``postgresql://`` -> asyncpg)."""
    return _with_driver(url, _ASYNC_DRIVERS, "asyncio")


def sync_url(url: str | URL) -> URL:
    """``url`` with a blocking driver when it names none (``postgresql://`` -> psycopg)."""
    return _with_driver(url, _SYNC_DRIVERS, "blocking")


def _with_driver(url: str | URL, drivers: dict[str, str], kind: str) -> URL:
    parsed = _parse(url)
    if "+" in parsed.drivername:
        return parsed
    driver = drivers.get(parsed.drivername)
    if driver is None:
        raise ConfigurationError(
            f"unsupported database {parsed.drivername!r}; use postgresql://, sqlite:/// "
            f"or name a {kind} driver explicitly (dialect+driver://)"
        )
    return parsed.set(drivername=driver)


def make_async_engine(db: str | URL | AsyncEngine, **options: Any) -> tuple[AsyncEngine, bool]:
    """An engine for ``db`` and whether we created it (and so must dispose of it)."""
    if isinstance(db, AsyncEngine):
        return db, False
    url = async_url(db)
    if url.get_backend_name() == "postgresql":
        options.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **options), True


def dialect_name(db: AsyncEngine) -> str:
    return db.dialect.name
