"""``sqlite:///path.db`` and ``postgresql://user@host/db``: a durable event log in SQL tables.

The embedded default: no broker, one database file (or the PostgreSQL you already run).

- Publish appends rows to ``hexa_log`` in batch inserts; concurrent publishes in one process
  share a transaction (group commit). ``publish`` returns after the commit.
- Consumer groups keep their own positions per (channel, virtual partition); the members of
  a group lease partitions with heartbeats, so they share the work, a key is read by one
  member at a time in publish order, and a killed member's partitions pass to the others
  after ``lease_ttl`` (unsettled deliveries are read again from the stored position).
- ``nack(delay)`` is durable (``hexa_redeliveries``, written by ``settle``); records
  published with a ``not_before`` time are not handed out before it (``delayed_publish``).
- Wake-ups: publishes in this process wake its consumers at once; on PostgreSQL a NOTIFY
  per publish transaction wakes the other processes (``notify=False`` turns it off); polling
  (``poll_interval`` .. ``max_poll_interval``) is the fallback everywhere.
- PostgreSQL: readers order rows by (inserting transaction id, id) and read only below the
  oldest running transaction, so late-committing transactions are never skipped. A
  long-running transaction anywhere in the PostgreSQL cluster delays delivery (never loses
  it): watch for sessions left idle in transaction.
- A record held back by ``not_before`` holds back later rows of its partition until due (per
  key order); the core only delays ``<action>.retry.<n>`` channels, whose delays are uniform.
- The log grows until :meth:`SqlDriver.prune` deletes rows every group has settled.
- SQLite: WAL mode, one writer at a time (``BEGIN IMMEDIATE``, ``busy_timeout``); several
  processes can share the file.

Tables come from :func:`~hexa_event.drivers.sql.migrate` (run on first use unless
``create_tables=False``); :func:`~hexa_event.drivers.sql.ddl` prints them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, bindparam, select, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ...driver import Driver, Features, RawRecord, SubscriptionSpec
from ...errors import ClosedError, ConfigurationError, DriverError
from .consumer import SqlSubscription
from .options import SqlOptions, redact_url
from .producer import Producer
from .schema import async_url, begin_write, make_engine, metadata, migrate_async, prepare_sqlite

logger = logging.getLogger(__name__)


def _features(dialect: str) -> Features:
    return Features(
        name=dialect,
        persistent=True,
        consumer_groups=True,
        ordered_per_key=True,
        patterns=True,
        delayed_publish=True,
        delayed_nack=True,
        exclusive_subscriptions=False,
        new_group_reads_history=True,
    )


@dataclass(frozen=True, slots=True)
class _State:
    dialect: str
    partitions: int
    tables: dict[str, Table]


class SqlDriver(Driver):
    """The SQL log driver. Build it with ``hexa_event.connect(url, **options)``,
    :meth:`from_url` or :meth:`from_engine`; nothing connects before first use."""

    def __init__(self, options: SqlOptions, *, engine: AsyncEngine | None = None) -> None:
        self.options = options
        if engine is not None:
            self.dialect = engine.dialect.name
        else:
            self.dialect = async_url(options.url).get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ConfigurationError(
                f"SQL driver supports SQLite and PostgreSQL, not {self.dialect!r}"
            )
        self.features = _features(self.dialect)
        self._engine = engine
        self._owns_engine = engine is None
        self._state: _State | None = None
        self._ready_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()
        self._producer = Producer(self, self._committed)
        self._subs: set[SqlSubscription] = set()
        self._listener: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SqlDriver:
        """``sqlite:///relative.db``, ``sqlite:////abs/path.db``, ``postgresql://u@h/db``;
        ``options`` are :class:`SqlOptions` fields."""
        return cls(SqlOptions.from_kwargs(url, options))

    @classmethod
    def from_engine(cls, engine: AsyncEngine, **options: Any) -> SqlDriver:
        """Use an existing async engine (for example the application's own). The caller
        keeps ownership: :meth:`close` does not dispose it. On SQLite the engine's
        connections are switched to WAL and DBAPI autocommit."""
        url = engine.url.render_as_string(hide_password=True)
        driver = cls(SqlOptions.from_kwargs(url, options), engine=engine)
        if driver.dialect == "sqlite":
            prepare_sqlite(engine, driver.options.busy_timeout, driver.options.sqlite_synchronous)
        return driver

    def __repr__(self) -> str:
        return f"SqlDriver({redact_url(self.options.url)!r})"

    # -- plumbing shared with the producer and the consumers ----------------------------------

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            self._engine = make_engine(self.options)
        return self._engine

    async def ready(self) -> _State:
        """Connect and (unless ``create_tables=False``) create the tables, once."""
        state = self._state
        if state is not None:
            return state
        async with self._ready_lock:
            if self._state is not None:
                return self._state
            if self._closed:
                raise ClosedError("this SQL driver was closed; connect() again")
            try:
                if self.options.create_tables:
                    partitions = await migrate_async(
                        self.engine, partitions=self.options.partitions
                    )
                else:
                    partitions = await self._stored_partitions()
            except DriverError:
                raise
            except Exception as exc:
                raise self.error("preparing the tables", exc) from exc
            md = metadata(self.dialect)
            self._state = _State(self.dialect, partitions, dict(md.tables))
            return self._state

    async def _stored_partitions(self) -> int:
        meta = metadata(self.dialect).tables["hexa_meta"]
        async with self.engine.connect() as conn:
            value = (
                await conn.execute(select(meta.c.value).where(meta.c.name == "partitions"))
            ).scalar()
        if value is None:
            raise DriverError(
                "SQL driver: the hexa_* tables are missing; run "
                "hexa_event.drivers.sql.migrate(url) or pass create_tables=True",
                retriable=False,
            )
        return int(value)

    def table(self, name: str) -> Table:
        assert self._state is not None, "ready() first"
        return self._state.tables[name]

    def dialect_insert(self, table: Table) -> Any:
        """The dialect's INSERT (with ``on_conflict_do_*``)."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads (single statements; nothing to commit)."""
        async with self.engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction, committed on exit. On SQLite writers of this process queue
        on a lock (one writer at a time, no busy waits between our own connections)."""
        lock = self._write_lock if self.dialect == "sqlite" else contextlib.nullcontext()
        async with lock, self.engine.connect() as conn:
            await begin_write(conn)
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.shield(conn.rollback())
                raise
            await conn.commit()

    async def insert_channels(self, conn: AsyncConnection, channels: set[str]) -> None:
        from .consumer import _now_ms

        table = self.table("hexa_channels")
        now = _now_ms()
        await conn.execute(
            self.dialect_insert(table).on_conflict_do_nothing(),
            [{"channel": c, "created_ms": now} for c in sorted(channels)],
        )

    def error(self, operation: str, exc: BaseException) -> DriverError:
        """A :class:`DriverError` for ``exc`` that names no password and no statement."""
        if isinstance(exc, DriverError):
            return exc
        orig: BaseException = exc
        if isinstance(exc, DBAPIError) and exc.orig is not None:
            orig = exc.orig
        detail = str(orig).strip().splitlines()[0][:300] if str(orig).strip() else ""
        retriable = isinstance(exc, DBAPIError | OSError | TimeoutError) or not isinstance(
            exc, SQLAlchemyError
        )
        return DriverError(
            f"SQL driver ({redact_url(self.options.url)}): {operation} failed: "
            f"{type(orig).__name__}: {detail}",
            retriable=retriable,
        )

    def _committed(self, channels: set[str]) -> None:
        for sub in list(self._subs):
            sub.notify(channels)

    def _forget(self, sub: SqlSubscription) -> None:
        self._subs.discard(sub)

    # -- the driver contract --------------------------------------------------------------

    async def publish(self, records: Sequence[RawRecord]) -> None:
        """Append ``records`` in one transaction; return after it committed."""
        if self._closed:
            raise ClosedError("this SQL driver was closed; connect() again")
        if not records:
            return
        await self._producer.publish(records)

    async def provision(self, channels: Sequence[str]) -> None:
        """Record the channels (pattern subscriptions see them); the log needs nothing else."""
        if self._closed:
            raise ClosedError("this SQL driver was closed; connect() again")
        if not channels:
            return
        await self.ready()
        try:
            async with self.writing() as conn:
                await self.insert_channels(conn, set(channels))
        except Exception as exc:
            raise self.error("provision", exc) from exc
        self._committed(set(channels))

    async def subscribe(self, spec: SubscriptionSpec) -> SqlSubscription:
        if self._closed:
            raise ClosedError("this SQL driver was closed; connect() again")
        if not spec.channels and not spec.pattern:
            raise ConfigurationError("subscribe needs channels or a pattern")
        state = await self.ready()
        sub = SqlSubscription(self, spec, state.partitions)
        self._subs.add(sub)
        try:
            await sub.open()
        except BaseException as exc:
            self._subs.discard(sub)
            await sub.close()
            if isinstance(exc, Exception):
                raise self.error(f"joining group {spec.group!r}", exc) from exc
            raise
        if self.dialect == "postgresql" and self.options.notify and self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="hexa-event:sql-listen")
        return sub

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._producer.close()
        for sub in list(self._subs):
            await sub.close()
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        if self._engine is not None and self._owns_engine:
            await self._engine.dispose()

    async def prune(
        self, older_than: float, *, channels: Sequence[str] | None = None, batch: int = 1000
    ) -> int:
        """Delete log rows older than ``older_than`` seconds that every consumer group has
        settled (behind all stored positions of their channel and partition, not awaiting
        redelivery), ``batch`` rows per transaction; only ``channels`` when given. Returns how
        many rows were deleted. Rows of channels no group consumes are deleted by age alone.

        Run it from a periodic task or cron; a group created later with ``start="earliest"``
        no longer sees pruned rows.
        """
        if older_than < 0 or batch < 1:
            raise ConfigurationError("prune(): older_than must be >= 0 and batch >= 1")
        await self.ready()
        from .consumer import _now_ms

        cutoff = _now_ms() - int(older_than * 1000)
        only = ""
        params: dict[str, Any] = {"cutoff": cutoff, "batch": batch}
        if channels is not None:
            if not channels:
                return 0
            only = "l.channel IN :channels AND "
            params["channels"] = list(channels)
        statement = text(
            "DELETE FROM hexa_log WHERE id IN (SELECT l.id FROM hexa_log l "
            f"WHERE {only}l.created_ms < :cutoff AND NOT EXISTS (SELECT 1 FROM hexa_positions p "
            "WHERE p.channel = l.channel AND p.part = l.part AND (p.pos_tx < l.txid OR "
            "(p.pos_tx = l.txid AND p.pos_id < l.id))) AND NOT EXISTS (SELECT 1 FROM "
            "hexa_redeliveries r WHERE r.log_id = l.id) ORDER BY l.id LIMIT :batch)"
        )
        if channels is not None:
            statement = statement.bindparams(bindparam("channels", expanding=True))
        total = 0
        while True:
            try:
                async with self.writing() as conn:
                    deleted = (await conn.execute(statement, params)).rowcount
            except Exception as exc:
                raise self.error("prune", exc) from exc
            total += max(0, deleted)
            if deleted < batch:
                return total

    # -- PostgreSQL LISTEN -------------------------------------------------------------------

    async def _listen(self) -> None:
        """Wake local consumers on NOTIFY from other processes; reconnect on failure."""
        url = self.engine.url
        if url.get_driver_name() != "asyncpg":
            return
        import asyncpg

        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        backoff = 0.5
        while not self._closed:
            conn: Any = None
            try:
                conn = await asyncpg.connect(dsn)
                lost = asyncio.Event()

                def on_notify(_c: Any, _pid: int, _channel: str, payload: str) -> None:
                    names = {n for n in payload.split("\n") if n} if payload else set()
                    if names:
                        self._committed(names)
                    else:
                        self._wake_all()

                conn.add_termination_listener(lambda _c, event=lost: event.set())
                await conn.add_listener("hexa_log", on_notify)
                backoff = 0.5
                # Catch up on anything committed while we were not listening.
                self._wake_all()
                await lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.debug("SQL driver: LISTEN failed (%s)", self.error("listen", exc))
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(conn.close(timeout=1))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def _wake_all(self) -> None:
        for sub in list(self._subs):
            sub.notify(None)
