"""The outbox table and the emit side: events join the caller's own transaction.

One row per event holds the record exactly as it will be sent (channel, key, headers, body,
event id, created time), sealed by the same :class:`~hexa_event.envelope.Envelope` the
emitters use, so the relay publishes it without re-encoding. A row is *unsent* while
``sent_at`` is NULL; the relay leases rows (``lease_until``, ``lease_token``) while it
publishes them. Once the broker acknowledged them it deletes them and writes one line per
batch into ``hexa_outbox_sent`` (when they were sent, how many, their event ids): a delete
writes no new row version and no index entry, where setting ``sent_at`` did both. Tables
made before that table existed keep working: until ``migrate`` adds it, relays set
``sent_at`` as they used to, and the cleaner deletes such rows too.

Create the tables with :func:`migrate` (or :func:`migrate_async`); :func:`ddl` shows the DDL.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import msgspec
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    insert,
    text,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from .._sql.clock import utcnow
from .._sql.dialects import tables_ddl
from .._sql.names import (
    TableNames,
    check_channel,
    check_table_dialect,
    chosen_table,
    dialect_of,
    table_names,
)
from .._sql.schema import create_tables, create_tables_async
from ..codecs import Codec
from ..context import Context
from ..driver import RawRecord
from ..envelope import EVENT_ID, CloudEvents, Envelope
from ..errors import ConfigurationError, InvalidEventError
from ..event import Event
from ..propagation import Propagator

log = logging.getLogger(__name__)

_ID = BigInteger().with_variant(Integer(), "sqlite")  # INTEGER PRIMARY KEY = rowid on SQLite

TABLE = "hexa_outbox"
"""The outbox table's name before any ``table_prefix``."""
SENT_TABLE = f"{TABLE}_sent"
"""The sent log's name before any ``table_prefix``: one row per batch relayed."""
DERIVED_NAMES = (
    TABLE,
    f"{TABLE}_pkey",
    f"{TABLE}_id_seq",
    f"ix_{TABLE}_unsent",
    f"ix_{TABLE}_key_unsent",
    f"ix_{TABLE}_leased",
    f"ix_{TABLE}_sent_at",
    SENT_TABLE,
    f"{SENT_TABLE}_pkey",
)
"""Every name PostgreSQL derives from the tables' (63-byte limit once prefixed)."""


def _build(md: MetaData, names: TableNames) -> Table:
    name = names.table(TABLE)
    table = Table(
        name,
        md,
        Column("id", _ID, primary_key=True, autoincrement=True),
        Column("event_id", String(64), nullable=False),
        Column("channel", String(255), nullable=False),
        Column("key", String(512), nullable=False),
        Column("headers", LargeBinary, nullable=False),
        Column("body", LargeBinary, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("sent_at", DateTime(timezone=True), nullable=True),
        Column("lease_until", DateTime(timezone=True), nullable=True),
        Column("lease_token", String(36), nullable=True),
        Column("attempts", Integer, nullable=False, server_default=text("0")),
        Column("last_error", Text, nullable=True),
        # Room on each page so the relay's lease updates can be HOT (no index writes).
        postgresql_with={"fillfactor": 70},
        schema=names.schema,
    )
    unsent = table.c.sent_at.is_(None)
    sent = table.c.sent_at.is_not(None)
    leased = unsent & table.c.lease_until.is_not(None)
    Index(f"ix_{name}_unsent", table.c.id, postgresql_where=unsent, sqlite_where=unsent)
    Index(
        f"ix_{name}_key_unsent",
        table.c.key,
        table.c.id,
        postgresql_where=unsent,
        sqlite_where=unsent,
    )
    Index(
        f"ix_{name}_leased", table.c.key, table.c.id, postgresql_where=leased, sqlite_where=leased
    )
    Index(f"ix_{name}_sent_at", table.c.sent_at, postgresql_where=sent, sqlite_where=sent)
    Table(
        names.table(SENT_TABLE),
        md,
        # Time first: the cleaner and the send rate read it by time; a batch's first row id
        # makes it unique (each outbox row is deleted, so written here, once).
        Column("sent_at", DateTime(timezone=True), primary_key=True),
        Column("first_id", _ID, primary_key=True, autoincrement=False),
        Column("last_id", _ID, nullable=False),
        Column("row_count", Integer, nullable=False),
        Column("event_ids", Text, nullable=False),
        schema=names.schema,
    )
    return table


def sent_table(table: Table) -> Table:
    """The sent log of outbox ``table`` (``hexa_outbox_sent`` beside ``hexa_outbox``): one
    row per relayed batch with ``sent_at``, the first and last row ids, ``row_count`` and
    the event ids (space-separated, in row order). :func:`migrate` creates it."""
    name = table.name + SENT_TABLE[len(TABLE) :]
    key = name if table.schema is None else f"{table.schema}.{name}"
    found = table.metadata.tables.get(key)
    if found is None:
        raise ConfigurationError(
            f"{table.fullname} has no sent log in its metadata: build outbox tables with "
            "hexa_event.outbox.table_for(schema, table_prefix)"
        )
    return found


metadata = MetaData()
"""The metadata holding :data:`outbox_table` (the inbox table lives in its own)."""

outbox_table = _build(metadata, TableNames())
"""``hexa_outbox``: one row per emitted event; ``headers`` is a MessagePack map str->bytes.
The default table set; :func:`table_for` gives the one of a schema or prefix."""


def names_for(schema: str | None, table_prefix: str | None, *, owner: str) -> TableNames:
    """Checked :class:`TableNames` of an outbox table (identifier rules, PostgreSQL's
    63 bytes for every derived name and the NOTIFY channel); :class:`ConfigurationError`
    naming ``owner``'s option otherwise."""
    names = table_names(schema, table_prefix, owner=owner, derived=DERIVED_NAMES)
    check_channel(names, TABLE, owner=owner)
    return names


@functools.lru_cache(maxsize=64)
def _table_for(names: TableNames) -> Table:
    return outbox_table if names.default else _build(MetaData(), names)


def table_for(schema: str | None = None, table_prefix: str = "") -> Table:
    """The outbox table in PostgreSQL ``schema`` and/or named ``<table_prefix>hexa_outbox``
    (indexes and the NOTIFY channel follow), built once per pair; :data:`outbox_table`
    for neither. Names: lowercase letters, digits and ``_`` (:class:`ConfigurationError`
    naming what to change otherwise)."""
    return _named_table(schema, table_prefix, "outbox")


def resolve_table(
    table: Table | None, schema: str | None, table_prefix: str | None, *, owner: str
) -> Table:
    """The table an outbox component works on: ``table`` as given, or the one of
    ``schema``/``table_prefix`` (giving both is refused)."""
    return chosen_table(table, schema, table_prefix, owner=owner, table_for=_named_table)


def _named_table(schema: str | None, table_prefix: str | None, owner: str) -> Table:
    return _table_for(names_for(schema, table_prefix, owner=owner))


def notify_channel(table: Table) -> str:
    """The PostgreSQL LISTEN/NOTIFY channel of ``table``: its qualified name
    (``hexa_outbox``, ``billing.hexa_outbox``), so relays of other outboxes in the same
    database are not woken by these commits."""
    return table.fullname


NOTIFY_CHANNEL = "hexa_outbox"
"""The default table's PostgreSQL LISTEN/NOTIFY channel (:func:`notify_channel`)."""

_headers_encoder = msgspec.msgpack.Encoder()
_headers_decoder = msgspec.msgpack.Decoder(dict[str, bytes])


def encode_headers(headers: Mapping[str, bytes]) -> bytes:
    return _headers_encoder.encode(dict(headers))


decode_headers: Callable[[bytes], dict[str, bytes]] = _headers_decoder.decode
"""The headers of a stored row (the decoder's method itself: no call frame per row)."""


def row_values(record: RawRecord) -> dict[str, Any]:
    """The column values that store ``record`` as an unsent row."""
    raw_id = record.headers.get(EVENT_ID, b"")
    return {
        "event_id": raw_id.decode() if raw_id else "",
        "channel": record.channel,
        "key": record.key,
        "headers": encode_headers(record.headers),
        "body": record.body,
        "created_at": utcnow(),
    }


# -- DDL and migration ---------------------------------------------------------------------


def ddl(dialect: str = "postgresql", *, schema: str | None = None, table_prefix: str = "") -> str:
    """The DDL :func:`migrate` runs for the outbox, as SQL text for ``dialect``.

    ``dialect`` is ``postgresql``, ``sqlite``, ``mysql`` or ``mariadb``. Apply it with your
    own migration tool (Alembic...) if you prefer that to :func:`migrate`. ``schema`` /
    ``table_prefix``: see :func:`table_for`.
    """
    table = table_for(schema, table_prefix)
    check_table_dialect(table, dialect, owner="outbox ddl()")
    return tables_ddl([table, sent_table(table)], dialect)


def migrate(
    bind: Engine | Connection | str, *, schema: str | None = None, table_prefix: str = ""
) -> None:
    """Create the outbox table, its sent log and their indexes if they do not exist
    (idempotent; on a table made by an older version it adds the sent log, which relays
    then use: see :func:`sent_table`).

    ``bind`` is a SQLAlchemy ``Engine`` or ``Connection`` or a database URL (a blocking
    driver is chosen: psycopg for PostgreSQL). Never alters or drops anything, except that
    a missing ``schema`` is created. ``schema`` / ``table_prefix``: see :func:`table_for`.
    """
    table = table_for(schema, table_prefix)
    check_table_dialect(table, dialect_of(bind), owner="outbox migrate()")
    create_tables(table.metadata, [table, sent_table(table)], bind)


async def migrate_async(
    bind: AsyncEngine | AsyncConnection | str,
    *,
    schema: str | None = None,
    table_prefix: str = "",
) -> None:
    """:func:`migrate` for an ``AsyncEngine``/``AsyncConnection`` or a URL (asyncio driver)."""
    table = table_for(schema, table_prefix)
    check_table_dialect(table, dialect_of(bind), owner="outbox migrate()")
    await create_tables_async(table.metadata, [table, sent_table(table)], bind)


# -- emit ---------------------------------------------------------------------------------

_LENGTHS = (("event_id", 64, "id"), ("channel", 255, "channel"), ("key", 512, "key"))
"""The outbox's text columns: the length each holds, and the event's field it comes from."""


def _check_lengths(rows: list[dict[str, Any]], dialect: str) -> None:
    """Refuse a row a column cannot hold (too long, or a NUL) before inserting it: the
    database would refuse it too (SQLite excepted), and abort the caller's whole
    transaction with it."""
    if dialect == "sqlite":
        return
    for row in rows:
        for column, limit, field in _LENGTHS:
            if "\x00" in row[column]:
                raise InvalidEventError(
                    field, f"holds a NUL character, which the outbox's {column} column cannot"
                )
            if len(row[column]) > limit:
                raise InvalidEventError(
                    field,
                    f"is {len(row[column])} characters long, and the outbox table holds at "
                    f"most {limit} ({column} VARCHAR({limit})): shorten it",
                )


SyncTarget = Session | Connection
AsyncTarget = AsyncSession | AsyncConnection


class Outbox:
    """Writes events into ``hexa_outbox`` inside the caller's transaction.

    :meth:`emit` (sync ``Session``/``Connection``) and :meth:`emit_async` (``AsyncSession``/
    ``AsyncConnection``) only insert: the row becomes visible to the relay when the caller
    commits, and a rolled-back transaction leaves nothing to send. They return the event id
    (the ``HEXA_EVENT_ID`` header consumers see and the inbox dedups on).

    On PostgreSQL, ``notify=True`` also issues ``pg_notify('hexa_outbox', '')`` in the same
    transaction so relays wake at commit instead of at their next poll. Notifying commits
    are serialised cluster-wide by PostgreSQL; at thousands of commits per second turn it
    off and let the relay poll.

    ``schema`` (PostgreSQL) and ``table_prefix`` choose the outbox table
    (:func:`table_for`): ``schema="billing"`` writes ``billing.hexa_outbox`` and notifies
    channel ``billing.hexa_outbox``, so only that outbox's relays wake. Give the same to
    the relay, the cleaner and the CLI. ``table`` (a ``Table`` of :func:`table_for`) is the
    older way to say the same.
    """

    def __init__(
        self,
        *,
        codec: str | Codec = "json",
        propagator: Propagator | None = None,
        cloudevents: CloudEvents | None = None,
        notify: bool = True,
        schema: str | None = None,
        table_prefix: str = "",
        table: Table | None = None,
    ) -> None:
        self.envelope = Envelope(codec=codec, propagator=propagator, cloudevents=cloudevents)
        self.notify = notify
        self.table = resolve_table(table, schema, table_prefix, owner="Outbox")
        self._insert = insert(self.table)
        self._notify = text("SELECT pg_notify(:channel, '')").bindparams(
            channel=notify_channel(self.table)
        )

    def seal(self, event: Event[Any], ctx: Context | None) -> RawRecord:
        return self.envelope.seal(event, ctx)

    def _rows(
        self, events: Iterable[Event[Any]], ctx: Context | None
    ) -> tuple[list[dict[str, Any]], list[str]]:
        rows = [row_values(self.envelope.seal(event, ctx)) for event in events]
        return rows, [row["event_id"] for row in rows]

    def emit(self, target: SyncTarget, event: Event[Any], ctx: Context | None = None) -> str:
        """Insert ``event`` into ``target``'s transaction (sync); return its event id.

        Raises :class:`~hexa_event.errors.EncodeError` for an unencodable payload and
        TypeError for an async session (use :meth:`emit_async`).
        """
        return self.emit_many(target, [event], ctx)[0]

    def emit_many(
        self, target: SyncTarget, events: Sequence[Event[Any]], ctx: Context | None = None
    ) -> list[str]:
        """Insert several events in one statement (sync); return their ids in order."""
        conn = self._sync_connection(target)
        self._check(conn.dialect.name)
        rows, ids = self._rows(events, ctx)
        _check_lengths(rows, conn.dialect.name)
        if rows:
            try:
                conn.execute(self._insert, rows)
            except DBAPIError as exc:
                raise self._not_migrated(exc) from exc
            if self.notify and conn.dialect.name == "postgresql":
                conn.execute(self._notify)
        return ids

    async def emit_async(
        self, target: AsyncTarget, event: Event[Any], ctx: Context | None = None
    ) -> str:
        """Insert ``event`` into ``target``'s transaction (asyncio); return its event id."""
        return (await self.emit_many_async(target, [event], ctx))[0]

    async def emit_many_async(
        self, target: AsyncTarget, events: Sequence[Event[Any]], ctx: Context | None = None
    ) -> list[str]:
        """Insert several events in one statement (asyncio); return their ids in order."""
        if isinstance(target, AsyncSession):
            conn = await target.connection()
        elif isinstance(target, AsyncConnection):
            conn = target
        else:
            raise TypeError(
                "emit_async() takes an AsyncSession or AsyncConnection; use emit() with a "
                f"sync Session or Connection (got {type(target).__name__})"
            )
        self._check(conn.dialect.name)
        rows, ids = self._rows(events, ctx)
        _check_lengths(rows, conn.dialect.name)
        if rows:
            try:
                await conn.execute(self._insert, rows)
            except DBAPIError as exc:
                raise self._not_migrated(exc) from exc
            if self.notify and conn.dialect.name == "postgresql":
                await conn.execute(self._notify)
        return ids

    def _not_migrated(self, exc: DBAPIError) -> Exception:
        """``exc``, or a ConfigurationError naming the fix when the table is missing."""
        text = str(exc.orig if exc.orig is not None else exc).lower()
        if "no such table" not in text and "does not exist" not in text:
            return exc
        prefix = self.table.name.removesuffix(TABLE)
        flags = "".join(
            f" --{flag} {value}"
            for flag, value in (("schema", self.table.schema), ("table-prefix", prefix))
            if value
        )
        return ConfigurationError(
            f"the outbox table {self.table.fullname!r} does not exist in this database: "
            "create it once with hexa_event.outbox.migrate(engine_or_url) (or "
            f"await migrate_async(...)), or from a shell: hexa-event outbox migrate --db URL"
            f"{flags}"
        )

    def _check(self, dialect: str) -> None:
        if self.table.schema is not None and dialect == "sqlite":
            check_table_dialect(self.table, dialect, owner="Outbox")

    @staticmethod
    def _sync_connection(target: SyncTarget) -> Connection:
        if isinstance(target, Session):
            return target.connection()
        if isinstance(target, Connection):
            return target
        if isinstance(target, AsyncSession | AsyncConnection):
            raise TypeError("emit() got an async session or connection: use await emit_async()")
        raise TypeError(
            f"emit() takes a SQLAlchemy Session or Connection, got {type(target).__name__}"
        )
