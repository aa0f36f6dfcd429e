"""Shared helpers for the outbox and inbox tests: databases, recording and sink drivers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import create_engine, make_url, text

from hexa_event import Event
from hexa_event._sql.urls import sync_url
from hexa_event.driver import Driver, Features, RawRecord, Subscription, SubscriptionSpec
from hexa_event.envelope import EVENT_ID
from hexa_event.errors import DriverError
from hexa_event.inbox import inbox_table
from hexa_event.outbox import Outbox, outbox_table


def event_id(record: RawRecord) -> str:
    return record.headers[EVENT_ID].decode()


class RecordingDriver(Driver):
    """Keeps published records in memory; can fail or hold publishes on demand."""

    features = Features(name="recording", persistent=True)  # stands for a broker

    def __init__(self) -> None:
        self.records: list[RawRecord] = []
        self.calls = 0
        self.fail_next = 0
        self.gate: asyncio.Event | None = None
        self.in_publish = 0
        self.max_in_publish = 0
        self.changed = asyncio.Event()

    async def publish(self, records: Sequence[RawRecord]) -> None:
        self.calls += 1
        self.in_publish += 1
        self.max_in_publish = max(self.max_in_publish, self.in_publish)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.fail_next > 0:
                self.fail_next -= 1
                raise DriverError("injected publish failure")
            self.records.extend(records)
            self.changed.set()
        finally:
            self.in_publish -= 1

    async def subscribe(self, spec: SubscriptionSpec) -> Subscription:
        raise NotImplementedError

    async def close(self) -> None:
        return None

    def ids(self) -> list[str]:
        return [event_id(r) for r in self.records]


def pg_admin_url() -> str:
    return os.environ.get("HEXA_POSTGRES_URL") or "postgresql://postgres@127.0.0.1:5432/hexa_event"


def create_pg_database() -> str:
    """A fresh database on the test PostgreSQL; returns its plain URL (no driver)."""
    base = make_url(pg_admin_url())
    name = f"hexa_obx_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base.set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return base.set(drivername="postgresql", database=name).render_as_string(hide_password=False)


def drop_pg_database(url: str) -> None:
    target = make_url(url)
    admin = create_engine(
        make_url(pg_admin_url()).set(drivername="postgresql+psycopg"),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)'))
    admin.dispose()


def reset_tables(url: str) -> None:
    """Create (if needed) and empty the outbox and inbox tables."""
    from hexa_event import inbox, outbox

    sync = make_url(url)
    if sync.drivername in ("postgresql", "postgres"):
        sync = sync.set(drivername="postgresql+psycopg")
    engine = create_engine(sync)
    try:
        outbox.migrate(engine)
        inbox.migrate(engine)
        with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                conn.execute(text("PRAGMA journal_mode=WAL"))
            conn.execute(outbox_table.delete())
            conn.execute(outbox.sent_table(outbox_table).delete())
            conn.execute(inbox_table.delete())
    finally:
        engine.dispose()


def outbox_emit(url: str, events: Sequence[Event[Any]]) -> list[str]:
    """Writes ``events`` to the outbox of the database at ``url`` in one transaction; their ids."""
    engine = create_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            return Outbox(notify=False).emit_many(conn, events)
    finally:
        engine.dispose()


def rows(url: str, sql: str, **params: Any) -> list[Any]:
    sync = make_url(url)
    if sync.drivername in ("postgresql", "postgres"):
        sync = sync.set(drivername="postgresql+psycopg")
    engine = create_engine(sync)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params).all())
    finally:
        engine.dispose()


class SinkDriver(Driver):
    """A durable broker stand-in: ``publish`` commits records to a SQLite file, then returns.

    Lives outside the database under test, so it survives relay kills and PostgreSQL
    restarts; the fault tests read it back as "what the broker has".
    """

    features = Features(name="sink", persistent=True)

    def __init__(self, path: str) -> None:
        self.path = path
        with self._connect() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS sink (seq INTEGER PRIMARY KEY, event_id TEXT, "
                "key TEXT, body BLOB)"
            )

    def _connect(self) -> Any:
        import sqlite3

        conn = sqlite3.connect(self.path, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    def _insert(self, records: Sequence[RawRecord]) -> None:
        conn = self._connect()
        try:
            with conn:
                conn.executemany(
                    "INSERT INTO sink (event_id, key, body) VALUES (?, ?, ?)",
                    [(event_id(r), r.key, r.body) for r in records],
                )
        finally:
            conn.close()

    async def publish(self, records: Sequence[RawRecord]) -> None:
        await asyncio.to_thread(self._insert, records)

    async def subscribe(self, spec: SubscriptionSpec) -> Subscription:
        raise NotImplementedError

    async def close(self) -> None:
        return None

    def read(self) -> list[tuple[str, str, bytes]]:
        conn = self._connect()
        try:
            return list(conn.execute("SELECT event_id, key, body FROM sink ORDER BY seq"))
        finally:
            conn.close()


class FreezingProxy:
    """A TCP proxy in front of the test PostgreSQL that can stop answering: bytes are held
    both ways while frozen, connections stay open (a database that does not answer, as when
    its host hangs), without touching the shared server."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.thawed = asyncio.Event()
        self.thawed.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def start(self) -> FreezingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def freeze(self) -> None:
        self.thawed.clear()

    def thaw(self) -> None:
        self.thawed.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.thawed.wait()  # a new connection is accepted, then nothing answers
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._writers += [writer, up_writer]
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pump(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await source.read(65536):
                await self.thawed.wait()
                sink.write(data)
                await sink.drain()
        with contextlib.suppress(OSError):
            sink.close()

    async def close(self) -> None:
        self.thaw()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for writer in self._writers:
            with contextlib.suppress(OSError):
                writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
