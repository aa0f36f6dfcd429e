"""``sqlite:///path.db`` and ``postgresql://user@host/db``: a durable event log in SQL tables,
the embedded default (no broker). How it works: docs/engines/sql.md ("Internals")."""

from __future__ import annotations

import asyncio
import os
import tempfile
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from ..._sql.clock import now_ms
from ..._sql.engine import prepare_sqlite
from ..._sql.listen import listen
from ..._sql.urls import redact
from ...driver import Features, Finding, RawRecord, SubscriptionSpec
from ...errors import ConfigurationError
from ..kit.driver import KitDriver
from .consumer import SqlSubscription
from .diagnose import diagnose
from .log import SqlLog
from .options import SqlOptions
from .producer import Producer, check_columns
from .schema import async_url, sqlite_file


class SqlDriver(KitDriver, SqlLog):
    """The SQL log driver. Build it with ``hexa_event.connect(url, **options)``,
    :meth:`from_url` or :meth:`from_engine`; nothing connects before first use. It is the
    :class:`SqlLog` its producer and subscriptions write and read through (one ``closed``
    flag: set when ``close`` begins)."""

    options_type = SqlOptions

    def __init__(self, options: SqlOptions, *, engine: AsyncEngine | None = None) -> None:
        if engine is not None:
            dialect = engine.dialect.name
        else:
            dialect = async_url(options.url).get_backend_name()
        if dialect not in ("sqlite", "postgresql"):
            raise ConfigurationError(f"SQL driver supports SQLite and PostgreSQL, not {dialect!r}")
        KitDriver.__init__(self)
        SqlLog.__init__(self, options, dialect, engine)
        self.features = Features(
            name=dialect, persistent=True, delayed_publish=True, delayed_nack=True
        )
        self._producer = Producer(self)
        self._listener: asyncio.Task[None] | None = None
        self.subscriptions = weakref.WeakSet()  # closing one twice is a no-op

    @classmethod
    def from_engine(cls, engine: AsyncEngine, **options: Any) -> SqlDriver:
        """Use an existing async engine (for example the application's own). The caller
        keeps ownership: :meth:`close` does not dispose it. On SQLite the engine's
        connections are switched to WAL and DBAPI autocommit."""
        url = engine.url.render_as_string(hide_password=True)
        driver = cls(SqlOptions.from_url(url, **options), engine=engine)
        if driver.dialect == "sqlite":
            prepare_sqlite(engine, driver.options.busy_timeout, driver.options.sqlite_synchronous)
        return driver

    def __repr__(self) -> str:
        return f"SqlDriver({redact(self.options.url)!r})"

    async def check(self, within: float = 10.0) -> str:
        """SQLite: the file (or its directory) is writable by this process; PostgreSQL: the
        server accepts a session. Nothing is created."""
        if self.dialect == "sqlite":
            if (path := sqlite_file(self.options.url)) is None:
                return "SQLite database named by a URI filename"
            return await asyncio.to_thread(_check_sqlite_file, path)
        with self.failing("connect"):
            async with asyncio.timeout(within), self.connection() as conn:
                await conn.execute(text("SELECT 1"))
        return "database answers"

    async def diagnose(
        self, channels: Sequence[str], groups: Sequence[str], within: float = 10.0
    ) -> list[Finding]:
        """The check, the tables, the channels and the groups (:mod:`.diagnose`); on
        PostgreSQL the database's own answer (no such database, refused credentials) comes
        first."""
        if self.dialect == "sqlite":
            found = await super().diagnose(channels, groups, within)
            return found + await diagnose(self.options, self.dialect, channels, groups)
        found = await diagnose(self.options, self.dialect, channels, groups)
        if any(f.status == "fail" for f in found):
            return found
        return found + await super().diagnose(channels, groups, within)

    # -- the driver contract --------------------------------------------------------------

    validate = staticmethod(check_columns)
    """What the log's columns cannot hold (:func:`.producer.check_columns`)."""

    async def send(self, records: Sequence[RawRecord]) -> None:
        """Append ``records`` in one transaction; return after it committed."""
        await self._producer.publish(records)

    async def create_channels(self, channels: Sequence[str]) -> Mapping[str, int]:
        """Record the channels in ``hexa_channels`` (pattern subscriptions match them)."""
        partitions = await self.ready()
        table, now = self.table("hexa_channels"), now_ms()
        with self.failing("provision"):
            async with self.writing() as conn:
                rows = [{"channel": c, "created_ms": now} for c in sorted(set(channels))]
                await conn.execute(self.upsert(table), rows)
        self.committed(set(channels))
        return dict.fromkeys(channels, partitions)

    async def subscribe(self, spec: SubscriptionSpec) -> SqlSubscription:
        self.check_open()
        if not spec.channels and not spec.pattern:
            raise ConfigurationError("subscribe needs channels or a pattern")
        partitions = await self.ready()
        self.check_open()  # closed meanwhile: its close would not see this subscription
        sub = SqlSubscription(self, spec, partitions)
        self.subscriptions.add(sub)
        try:
            await sub.open()
        except BaseException as exc:
            await sub.close()
            if isinstance(exc, Exception):
                raise self.error(f"joining group {spec.group!r}", exc) from exc
            raise
        self.check_open()  # closed while joining: the close closed it
        if self.dialect == "postgresql" and self.options.notify and self._listener is None:
            # Wake local consumers on NOTIFY from other processes; on every (re)connect,
            # catch up on anything committed while we were not listening.
            listening = listen(
                self.engine, self.channel, self._notified, on_connected=lambda: self.committed(None)
            )
            self._listener = asyncio.create_task(listening, name="hexa-event:sql-listen")
        return sub

    def _notified(self, payload: str) -> None:
        """A NOTIFY payload: the channel names, one a line (empty: look at every channel)."""
        self.committed(set(payload.split("\n")) - {""} or None)

    async def close_engine(self) -> None:
        """Let queued publishes finish, stop listening, dispose of the engine we made."""
        await self._producer.close()
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        await self.dispose()

    async def prune(
        self, older_than: float, *, channels: Sequence[str] | None = None, batch: int = 1000
    ) -> int:
        """Delete log rows older than ``older_than`` seconds that every consumer group has
        settled (behind all stored positions, not awaiting redelivery), ``batch`` rows per
        transaction, only of ``channels`` when given; return how many. Rows of channels no
        group consumes go by age alone; a group created later with ``start="earliest"`` no
        longer sees them. Run it from a periodic task or cron."""
        if older_than < 0 or batch < 1:
            raise ConfigurationError("prune(): older_than must be >= 0 and batch >= 1")
        await self.ready()
        log_t, positions, redeliveries = (
            self.sql_name(name) for name in ("hexa_log", "hexa_positions", "hexa_redeliveries")
        )
        only = "l.channel IN :channels AND " if channels is not None else ""
        statement = text(
            f"DELETE FROM {log_t} WHERE id IN (SELECT l.id FROM {log_t} l "
            f"WHERE {only}l.created_ms < :cutoff AND NOT EXISTS (SELECT 1 FROM {positions} p "
            "WHERE p.channel = l.channel AND p.part = l.part AND (p.pos_tx < l.txid OR "
            f"(p.pos_tx = l.txid AND p.pos_id < l.id))) AND NOT EXISTS (SELECT 1 FROM "
            f"{redeliveries} r WHERE r.log_id = l.id) ORDER BY l.id LIMIT :batch)"
        )
        params: dict[str, Any] = {"cutoff": now_ms() - int(older_than * 1000), "batch": batch}
        if channels is not None:
            if not channels:
                return 0
            statement = statement.bindparams(bindparam("channels", expanding=True))
            params["channels"] = list(channels)
        total = 0
        while True:
            with self.failing("prune"):
                async with self.writing() as conn:
                    deleted = (await conn.execute(statement, params)).rowcount
            total += max(0, deleted)
            if deleted < batch:
                return total


def _check_sqlite_file(path: str) -> str:
    """What stops this process from writing SQLite file ``path`` and the WAL and journal
    files beside it: tried (open for writing, a probe file beside it), not guessed from
    mode bits (root, ACLs, read-only mounts)."""
    folder = os.path.dirname(os.path.abspath(path))
    exists = os.path.exists(path)
    if not exists and not os.path.isdir(folder):
        raise ConfigurationError(
            f"SQLite file {path} cannot be created: directory {folder} does not exist; "
            "create it or fix the path (sqlite:///relative.db, sqlite:////absolute.db)"
        )
    try:
        if exists:
            with open(path, "r+b"):
                pass
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".hexa-event-check-"):
            pass
    except OSError as exc:
        what = f"SQLite file {path}" if exists else f"a new SQLite file in {folder}"
        raise ConfigurationError(
            f"this process cannot write {what} (nor the WAL and journal files beside it): "
            f"{exc.strerror or exc}; fix the owner or mode of {folder}, or point the URL "
            "elsewhere"
        ) from None
    if exists:
        return f"SQLite file {path} is writable"
    return f"SQLite file {path} does not exist yet; the driver will create it"
