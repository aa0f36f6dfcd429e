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
from ..redaction import redact_url, scrub, url_secrets

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


_LIBPQ = (
    "host hostaddr port dbname user password passfile require_auth channel_binding "
    "connect_timeout client_encoding options application_name fallback_application_name "
    "keepalives keepalives_idle keepalives_interval keepalives_count tcp_user_timeout "
    "replication gssencmode sslmode requiressl sslnegotiation sslcompression sslcert sslkey "
    "sslkeylogfile sslpassword sslcertmode sslrootcert sslcrl sslcrldir sslsni requirepeer "
    "ssl_min_protocol_version ssl_max_protocol_version krbsrvname gsslib gssdelegation "
    "service target_session_attrs load_balance_hosts"
)
_ASYNCPG = (
    "servicefile database timeout statement_cache_size max_cached_statement_lifetime "
    "max_cacheable_statement_size command_timeout ssl direct_tls prepared_statement_cache_size"
)
_SQLITE = (
    "timeout isolation_level detect_types check_same_thread cached_statements uri "
    "mode cache vfs immutable nolock psow modeof"
)
DATABASE_PARAMETERS: dict[str, frozenset[str]] = {
    "postgresql": frozenset(f"{_LIBPQ} {_ASYNCPG}".split()),
    "sqlite": frozenset(_SQLITE.split()),
}
"""URL query parameters of the database drivers (libpq/psycopg and asyncpg; sqlite3 and
SQLite's URI filenames), passed to them as they are. Any other query option is refused
(the SQL driver's own options are the exception it makes): a typo handed to the database
driver would fail at the first query, or be ignored with a warning."""


def check_query(url: URL, *, owner: str, ours: str = "") -> None:
    """Refuse query options that are not the database driver's (for PostgreSQL and SQLite;
    other databases' drivers check their own): a typo such as ``?table_prefx=a_`` would
    otherwise reach the database driver. ``ours`` names where the caller's own options go."""
    allowed = DATABASE_PARAMETERS.get(url.get_backend_name())
    if allowed is None:
        return
    unknown = sorted(set(url.query) - allowed)
    if unknown:
        where = f" ({ours})" if ours else ""
        raise ConfigurationError(
            # The URL without its query: a misspelled secret's name is not recognised as one.
            f"{owner}: unknown database URL option(s) {unknown} in "
            f"{redact(url.set(query={}))!r}{where}; "
            f"the database driver's parameters are: {', '.join(sorted(allowed))}"
        )


def redact(url: str | URL) -> str:
    """The URL as text with any password replaced by ``***`` (never raises)."""
    if isinstance(url, URL):  # the query may hold secrets too (?password=, ?sslpassword=)
        return redact_url(url.render_as_string(hide_password=True))
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
        # Not chained, and scrubbed: the "port" urlsplit quotes may be a password's start (a
        # password holding an unencoded "#", "?" or "/" ends the host early).
        raise ConfigurationError(
            f"bad database URL {redact(url)!r} ({scrub(str(exc), url_secrets(url))}): an IPv6 "
            "host needs both brackets ([::1]), a port must be a number 1-65535 and a password "
            f"percent-encodes #, ? and / (%23, %3F, %2F); e.g. {_EXAMPLES}"
        ) from None
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
