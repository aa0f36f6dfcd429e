"""Access to the log's database: engine, tables, transactions, errors, commit wake-ups (the
layer under the producer and the consumers, neither of which imports the driver)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..._sql.dialects import upsert
from ..._sql.engine import begin_write
from ..._sql.problems import driver_error
from ..._sql.urls import redact
from ...errors import ClosedError, DriverError
from .options import NOTIFY_TABLE, TABLES, SqlOptions
from .schema import make_engine, metadata, migrate_async


class SqlLog:
    """The database under one SQL driver (its base class); nothing connects before first
    use."""

    closed: bool
    """The driver's flag, set when its close begins: preparing and publishing raise ClosedError."""

    def __init__(self, options: SqlOptions, dialect: str, engine: AsyncEngine | None) -> None:
        self.options = options
        self.dialect = dialect
        self.names = options.names
        """Where the tables live (schema, prefix)."""
        self.channel = self.names.qualified(NOTIFY_TABLE)
        """The PostgreSQL LISTEN/NOTIFY channel: the log table's qualified name, so
        drivers on other table sets in the same database never wake these consumers."""
        md = metadata(dialect, schema=self.names.schema, table_prefix=self.names.prefix)
        self._tables = {name: md.tables[self.names.qualified(name)] for name in TABLES}
        self._engine = engine
        self._owns_engine = engine is None
        self._partitions = 0
        self._ready_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()
        self._users = 0
        """Operations holding or about to make a connection (:meth:`using`)."""
        self._unused = asyncio.Event()
        self._disposing = False  # set by :meth:`dispose`: no new operation
        self.watchers: set[Callable[[set[str] | None], None]] = set()
        """Told which channels got committed rows, None: unknown, look at every channel
        (subscriptions add their ``notify``)."""

    @property
    def engine(self) -> AsyncEngine:
        """The async engine (created on first use unless given)."""
        if self._engine is None:
            self._engine = make_engine(self.options)
        return self._engine

    async def ready(self) -> int:
        """Connect and (unless ``create_tables=False``) create the tables, once; the
        partition count stored with them."""
        if self.closed:
            raise ClosedError("this SQL driver was closed; connect() again")
        if self._partitions:
            return self._partitions
        async with self._ready_lock, self.using():
            if self._partitions:
                return self._partitions
            with self.failing("preparing the tables"):
                if self.options.create_tables:
                    self._partitions = await migrate_async(
                        self.engine, partitions=self.options.partitions, names=self.names
                    )
                else:
                    self._partitions = await self._stored_partitions()
            return self._partitions

    async def _stored_partitions(self) -> int:
        meta = self._tables["hexa_meta"]
        async with self.connection() as conn:
            value = (
                await conn.execute(select(meta.c.value).where(meta.c.name == "partitions"))
            ).scalar()
        if value is None:
            raise DriverError(
                f"SQL driver: the {meta.fullname} table is empty or its tables are missing "
                f"({self.names.describe()}); run hexa_event.drivers.sql.migrate(url, "
                "schema=..., table_prefix=...) or pass create_tables=True",
                retriable=False,
            )
        return int(value)

    def table(self, name: str) -> Table:
        """Table ``name`` (unprefixed: ``"hexa_log"``) of this driver's set."""
        return self._tables[name]

    def sql_name(self, name: str) -> str:
        """Table ``name`` as raw SQL: schema-qualified and quoted by the dialect."""
        return str(self.engine.dialect.identifier_preparer.format_table(self._tables[name]))

    def upsert(self, table: Table, keys: Sequence[str] = (), update: Sequence[str] = ()) -> Any:
        """The dialect's INSERT into ``table`` that leaves a row whose primary key exists as it
        is, or (given its ``keys``) sets the ``update`` columns of that row."""
        stmt = upsert(table, self.dialect)
        if not update:
            return stmt.on_conflict_do_nothing()
        changed = {column: stmt.excluded[column] for column in update}
        return stmt.on_conflict_do_update(index_elements=list(keys), set_=changed)

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction, committed on exit. On SQLite writers of this process queue
        on a lock (one writer at a time, no busy waits between our own connections)."""
        lock = self._write_lock if self.dialect == "sqlite" else contextlib.nullcontext()
        async with lock, self.connection() as conn:
            await begin_write(conn)
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.shield(conn.rollback())
                raise
            await conn.commit()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection]:
        """A connection of the engine, counted by :meth:`using` (every connection the driver
        opens: after close, ClosedError rather than a new one nobody closes)."""
        async with self.using(), self.engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def using(self) -> AsyncIterator[None]:
        """One operation on the engine; ClosedError once the driver is disposing of it
        (:meth:`dispose` waits for those under way)."""
        if self._disposing:
            raise ClosedError("this SQL driver was closed; connect() again")
        self._users += 1
        try:
            yield
        finally:
            self._users -= 1
            if not self._users:
                self._unused.set()

    async def dispose(self) -> None:
        """Refuse new operations; once those under way ended (within ``busy_timeout``, what
        one waits for the database's lock), dispose of the engine if it was made here."""
        self._disposing = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.options.busy_timeout):
                while self._users:
                    self._unused.clear()
                    await self._unused.wait()
        if self._owns_engine and self._engine is not None:
            await self._engine.dispose()

    def error(self, operation: str, exc: BaseException) -> DriverError:
        """A :class:`DriverError` for ``exc`` that names no password and no statement."""
        return driver_error(f"SQL driver ({redact(self.options.url)})", operation, exc)

    @contextmanager
    def failing(self, operation: str) -> Iterator[None]:
        """Raise a failure inside as :meth:`error` (a DriverError or ClosedError as it is)."""
        try:
            yield
        except (DriverError, ClosedError):
            raise
        except Exception as exc:
            raise self.error(operation, exc) from exc

    # -- wake-ups ----------------------------------------------------------------------------

    def committed(self, channels: set[str] | None) -> None:
        """Rows were committed to ``channels`` (None: unknown): wake the watchers."""
        for watcher in list(self.watchers):
            watcher(channels)
