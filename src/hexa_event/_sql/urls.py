"""Database URLs: parsing with errors that name what to change, DBAPI choice, redaction.

``postgresql://`` and ``postgres://`` get asyncpg (or psycopg for blocking use), ``sqlite://``
aiosqlite (or the standard library); a URL naming its driver (``dialect+driver://``) keeps
it, except the blocking drivers that have an asyncio twin (psycopg2 -> asyncpg, pysqlite ->
aiosqlite). Passwords are only ever shown as ``***``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from sqlalchemy.engine import URL, make_url

from ..errors import ConfigurationError
from ..redaction import redact_url

_EXAMPLES = "postgresql://user@host:5432/db or sqlite:///path/app.db"

_ASYNC_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "postgres+psycopg2": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
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


def redact(url: str | URL) -> str:
    """The URL as text with any password replaced by ``***`` (never raises)."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    return redact_url(url)


def parse(url: str | URL) -> URL:
    """``url`` parsed; :class:`ConfigurationError` naming what is wrong otherwise."""
    if isinstance(url, URL):
        return url
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(f"not a database URL: {redact(str(url))!r}; use {_EXAMPLES}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - validates the port and the brackets of an IPv6 host
    except ValueError as exc:
        raise ConfigurationError(
            f"bad database URL {redact(url)!r} ({exc}): an IPv6 host needs both brackets "
            f"([::1]) and a port must be a number 1-65535; e.g. {_EXAMPLES}"
        ) from exc
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy.exc.ArgumentError, ValueError
        raise ConfigurationError(
            f"cannot parse the database URL {redact(url)!r}; use {_EXAMPLES}"
        ) from exc
    if parsed.get_backend_name() == "sqlite" and parsed.host:
        scheme = url.split("://", 1)[0]
        path = f"{parsed.host}/{parsed.database or ''}".rstrip("/")
        raise ConfigurationError(
            f"{redact(url)!r} reads {parsed.host!r} as a host, and SQLite has none: a SQLite "
            f"URL has three slashes before a relative path ({scheme}:///{path}) and four "
            f"before an absolute one ({scheme}:////var/lib/app/{parsed.database or 'app.db'})"
        )
    return parsed


def async_url(url: str | URL) -> URL:
    """``url`` with an asyncio DBAPI (``postgresql://`` -> asyncpg, ``sqlite`` -> aiosqlite)."""
    return _with_driver(parse(url), _ASYNC_DRIVERS, "asyncio")


def sync_url(url: str | URL) -> URL:
    """``url`` with a blocking DBAPI (``postgresql://`` -> psycopg)."""
    return _with_driver(parse(url), _SYNC_DRIVERS, "blocking")


def _with_driver(parsed: URL, drivers: dict[str, str], kind: str) -> URL:
    target = drivers.get(parsed.drivername)
    if target is not None:
        return parsed.set(drivername=target)
    if "+" in parsed.drivername:
        return parsed
    raise ConfigurationError(
        f"unsupported database {parsed.drivername!r}; use {_EXAMPLES}, or name a {kind} "
        "driver explicitly (dialect+driver://)"
    )


def in_memory_sqlite(url: URL) -> bool:
    """Whether ``url`` is an in-memory SQLite database (private to each connection)."""
    if url.get_backend_name() != "sqlite":
        return False
    return not url.database or url.database == ":memory:" or "mode=memory" in str(url)
