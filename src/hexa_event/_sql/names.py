"""Where a set of tables lives: a PostgreSQL schema and/or a table-name prefix.

Two services (or two test runs) can share one database when their tables differ by schema
(``billing.hexa_log``) or by prefix (``billing_hexa_log``). :class:`TableNames` says which;
the SQL driver, the outbox and the inbox each build their ``Table`` objects from one, so
every statement, index, sequence and LISTEN/NOTIFY channel follows it.

Names are checked before any SQL is built: lowercase letters, digits and ``_``, starting
with a letter or ``_`` (so they mean the same quoted or not, in SQLAlchemy, ``psql`` and a
hand-written migration), and short enough that PostgreSQL keeps every name derived from them
(tables, indexes, ``<table>_pkey``, ``<table>_id_seq``, the NOTIFY channel) under its
63-byte limit instead of silently truncating two of them into one. Everything is quoted by
the dialect anyway: nothing here is ever pasted into SQL unchecked.

A schema is PostgreSQL only: SQLite's ``schema.table`` names an attached database, which
nothing here attaches, so it is refused with advice (a table prefix, or another file).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

from ..errors import ConfigurationError

MAX_IDENTIFIER = 63
"""PostgreSQL's identifier limit in bytes (NAMEDATALEN - 1); longer names are truncated."""

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")
_QUERY_KEYS = ("schema", "table_prefix")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TableNames:
    """A schema (None: the connection's default, ``search_path`` on PostgreSQL) and a
    prefix put before every table name (``""``: none). The default is exactly the tables
    as they always were."""

    schema: str | None = None
    prefix: str = ""

    @property
    def default(self) -> bool:
        return self.schema is None and not self.prefix

    def table(self, base: str) -> str:
        """The name of table ``base`` (``hexa_log`` -> ``billing_hexa_log``)."""
        return self.prefix + base

    def qualified(self, base: str) -> str:
        """``schema.table`` (or ``table``): also the table's LISTEN/NOTIFY channel, so
        two table sets in one database never wake each other."""
        name = self.table(base)
        return name if self.schema is None else f"{self.schema}.{name}"

    def describe(self) -> str:
        """For messages: ``schema 'billing', prefix 'b_'`` or ``the default tables``."""
        parts = []
        if self.schema is not None:
            parts.append(f"schema {self.schema!r}")
        if self.prefix:
            parts.append(f"table prefix {self.prefix!r}")
        return ", ".join(parts) or "the default tables"


def table_names(
    schema: str | None,
    prefix: str | None,
    *,
    owner: str,
    derived: Iterable[str],
) -> TableNames:
    """Checked :class:`TableNames`; ``owner`` names the option's owner in errors
    (``SqlOptions``, ``OutboxRelay``...) and ``derived`` are the names built from a table
    name without prefix (``hexa_log``, ``ix_hexa_outbox_unsent``, ``hexa_log_pkey``...).

    Raises :class:`ConfigurationError` naming the option and what to change.
    """
    if schema == "":
        schema = None
    prefix = prefix or ""
    if schema is not None:
        _check_identifier(schema, f"{owner} schema")
        if schema.startswith("pg_"):
            raise ConfigurationError(
                f"{owner} schema {schema!r}: names starting with 'pg_' are reserved by "
                "PostgreSQL; pick another schema name"
            )
        if len(schema.encode()) > MAX_IDENTIFIER:
            raise ConfigurationError(
                f"{owner} schema {schema!r} is {len(schema)} bytes; PostgreSQL keeps "
                f"{MAX_IDENTIFIER}: use a shorter schema name"
            )
    if prefix:
        _check_identifier(prefix, f"{owner} table_prefix")
    longest = max(derived, key=lambda base: len(base.encode()), default="")
    name = prefix + longest
    if len(name.encode()) > MAX_IDENTIFIER:
        room = MAX_IDENTIFIER - len(longest.encode())
        raise ConfigurationError(
            f"{owner} table_prefix {prefix!r} makes the name {name!r} "
            f"{len(name.encode())} bytes long and PostgreSQL keeps {MAX_IDENTIFIER}: "
            f"use a prefix of at most {room} characters"
        )
    return TableNames(schema, prefix)


def check_channel(names: TableNames, base: str, *, owner: str) -> None:
    """The NOTIFY channel ``schema.table`` must fit PostgreSQL's identifier limit too."""
    channel = names.qualified(base)
    size = len(channel.encode())
    if size > MAX_IDENTIFIER:
        raise ConfigurationError(
            f"{owner}: the LISTEN/NOTIFY channel {channel!r} (schema.table) is {size} bytes "
            f"and PostgreSQL keeps {MAX_IDENTIFIER}: shorten the schema or the table_prefix "
            f"by {size - MAX_IDENTIFIER} characters"
        )


def check_dialect(names: TableNames, dialect: str, *, owner: str) -> None:
    """Refuse a schema on SQLite (where ``schema.table`` means an attached database)."""
    if names.schema is not None and dialect == "sqlite":
        raise ConfigurationError(
            f"{owner} schema {names.schema!r}: schemas are PostgreSQL only (on SQLite "
            "'schema.table' names an attached database); use table_prefix, or another "
            "database file"
        )


def chosen_table(
    table: T | None,
    schema: str | None,
    table_prefix: str | None,
    *,
    owner: str,
    table_for: Callable[[str | None, str | None, str], T],
) -> T:
    """``table`` as given, or ``table_for(schema, table_prefix, owner)``; giving both is
    refused, naming ``owner``."""
    if table is not None:
        if schema or table_prefix:
            raise ConfigurationError(
                f"{owner}: give either table= or schema=/table_prefix=, not both"
            )
        return table
    return table_for(schema, table_prefix, owner)


def check_table_dialect(table: Any, dialect: str, *, owner: str) -> None:
    """:func:`check_dialect` for a built ``Table`` (its prefix is part of its name)."""
    check_dialect(TableNames(table.schema, ""), dialect, owner=owner)


def dialect_of(bind: object) -> str:
    """The dialect name of an engine, a connection or a URL (``postgresql+psycopg://`` ->
    ``postgresql``)."""
    if isinstance(bind, str):
        return bind.split(":", 1)[0].split("+", 1)[0]
    return str(getattr(getattr(bind, "dialect", None), "name", ""))


def split_url(url: str) -> tuple[str, str | None, str | None]:
    """``url`` without its ``schema`` and ``table_prefix`` query parameters, and their
    values (None when absent). Other query parameters stay for the database driver."""
    base, sep, query = url.partition("?")
    if not sep:
        return url, None, None
    query, hash_, fragment = query.partition("#")
    kept: list[tuple[str, str]] = []
    found: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in _QUERY_KEYS:
            if key in found and found[key] != value:
                raise ConfigurationError(
                    f"the database URL gives {key} twice ({found[key]!r}, {value!r}); keep one"
                )
            found[key] = value
        else:
            kept.append((key, value))
    if not found:
        return url, None, None
    # The part before '?' is kept byte for byte (urlunsplit would rewrite sqlite:///path).
    rest = urlencode(kept)
    stripped = base + (f"?{rest}" if rest else "") + (hash_ + fragment)
    return stripped, found.get("schema"), found.get("table_prefix")


def merge(option: T | None, from_url: T | None, *, name: str, owner: str) -> T | None:
    """One value for ``name`` from a keyword option and the URL query; refuses two
    different ones (which would be a silent choice)."""
    if option is not None and option != "" and from_url is not None and option != from_url:
        raise ConfigurationError(
            f"{owner}: {name} is {option!r} but the URL says {name}={from_url!r}; give it once"
        )
    return option if option not in (None, "") else from_url


def _check_identifier(value: object, what: str) -> None:
    if not isinstance(value, str) or _IDENTIFIER.fullmatch(value) is None:
        raise ConfigurationError(
            f"{what} {value!r} is not allowed: use lowercase letters, digits and '_', "
            "starting with a letter or '_' (e.g. 'billing' or 'billing_')"
        )


def url_and_names(
    url: str, schema: str | None, table_prefix: str | None, *, owner: str
) -> tuple[str, str | None, str]:
    """``url`` without our query parameters, and the schema and prefix from the keyword
    options or the URL (one of them; two different values are refused). Unchecked: the
    component that uses them checks them with its own derived names."""
    stripped, url_schema, url_prefix = split_url(url)
    return (
        stripped,
        merge(schema, url_schema, name="schema", owner=owner) or None,
        merge(table_prefix, url_prefix, name="table_prefix", owner=owner) or "",
    )
