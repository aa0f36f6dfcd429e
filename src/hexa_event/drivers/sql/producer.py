"""The emit side of the SQL driver: group-committed batch inserts into ``hexa_log``.

Concurrent ``publish`` calls are queued and written by one writer task in as few
transactions as possible (up to ``publish_batch`` rows each): every caller returns once the
transaction holding its rows committed, or gets a :class:`DriverError` (and then none of its
rows were stored, since one caller's rows are never split over two transactions).
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections import deque
from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy import text

from ...driver import RawRecord, refuse
from ...errors import ClosedError, InvalidEventError, NotStoredError
from .log import SqlLog

logger = logging.getLogger(__name__)

_encode_headers = msgspec.msgpack.Encoder().encode


def partition_of(key: str, partitions: int) -> int:
    """The virtual partition of ``key`` (CRC-32 of its UTF-8 bytes, modulo ``partitions``)."""
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % partitions


_COLUMNS = ("channel", "part", "msg_key", "headers", "body", "created_ms", "visible_ms")


_MAX_NOT_BEFORE = 2**53 / 1000  # seconds; stored as milliseconds in a BIGINT
MAX_CHANNEL = 255
"""Characters of a channel name the log's ``channel`` column holds (VARCHAR(255))."""


def check(records: Sequence[RawRecord]) -> None:
    """What the log's columns cannot hold, of records the contract's checks passed: a
    ``not_before`` past the BIGINT column, a channel over its length, a NUL in a key."""
    problems: dict[int, NotStoredError] = {}
    for index, record in enumerate(records):
        if record.not_before >= _MAX_NOT_BEFORE:
            raise InvalidEventError(
                "not_before", f"must be seconds since the epoch, got {record.not_before!r}"
            )
        if len(record.channel) > MAX_CHANNEL:
            problems[index] = NotStoredError(
                f"channel {record.channel[:60]!r}... has {len(record.channel)} characters; the "
                f"SQL log's channel column holds at most {MAX_CHANNEL}: use a shorter name",
                limit="channel length",
            )
        elif "\x00" in record.key:
            problems[index] = NotStoredError(
                f"key {record.key[:60]!r} contains a NUL character, which PostgreSQL text "
                "cannot hold (nor SQLite read back whole): remove it or encode the key",
                limit="key characters",
            )
    if problems:
        raise refuse(len(records), problems)


def to_rows(records: Sequence[RawRecord], partitions: int) -> list[tuple[Any, ...]]:
    """Rows for ``hexa_log`` in the order of :data:`_COLUMNS` (records already checked)."""
    created = time.time_ns() // 1_000_000
    crc32 = zlib.crc32
    return [
        (
            r.channel,
            crc32(r.key.encode("utf-8", "surrogatepass")) % partitions,
            r.key,
            _encode_headers(r.headers if type(r.headers) is dict else dict(r.headers)),
            bytes(r.body),
            created,
            int(r.not_before * 1000) if r.not_before > 0 else 0,
        )
        for r in records
    ]


def insert_sql(paramstyle: str, table: str = "hexa_log") -> str | None:
    """A plain INSERT into ``table`` (quoted SQL) for the DBAPI's paramstyle (None: use
    SQLAlchemy Core instead)."""
    if paramstyle == "qmark":
        marks = ", ".join("?" for _ in _COLUMNS)
    elif paramstyle == "numeric_dollar":
        marks = ", ".join(f"${n}" for n in range(1, len(_COLUMNS) + 1))
    elif paramstyle == "format":
        marks = ", ".join("%s" for _ in _COLUMNS)
    else:
        return None
    return f"INSERT INTO {table} ({', '.join(_COLUMNS)}) VALUES ({marks})"


class _Request:
    __slots__ = ("channels", "future", "rows")

    def __init__(self, rows: list[tuple[Any, ...]], channels: set[str], future: Any) -> None:
        self.rows = rows
        self.channels = channels
        self.future = future


class Producer:
    """Queues publish requests and commits them in groups (one writer task)."""

    def __init__(self, log: SqlLog) -> None:
        self._log = log
        self._queue: deque[_Request] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    async def publish(self, records: Sequence[RawRecord]) -> None:
        if self._closed:
            raise ClosedError("this SQL driver was closed; connect() again")
        rows = to_rows(records, await self._log.ready())
        channels = {r.channel for r in records}
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Request(rows, channels, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_loop(), name="hexa-event:sql-writer")
        # Shielded: a cancelled caller leaves its rows to the writer (they may be stored).
        await asyncio.shield(future)

    async def _write_loop(self) -> None:
        limit = self._log.options.publish_batch
        while self._queue:
            batch: list[_Request] = []
            count = 0
            while self._queue and (not batch or count + len(self._queue[0].rows) <= limit):
                request = self._queue.popleft()
                batch.append(request)
                count += len(request.rows)
            try:
                channels = await self._write(batch)
            except asyncio.CancelledError:
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(ClosedError("the SQL driver was closed"))
                raise
            except Exception as exc:
                error = self._log.error("publish", exc)
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(error)
                continue
            for request in batch:
                if not request.future.done():
                    request.future.set_result(None)
            self._log.committed(channels)

    async def _write(self, batch: list[_Request]) -> set[str]:
        await self._log.ready()
        rows = [row for request in batch for row in request.rows]
        channels = set().union(*(request.channels for request in batch))
        async with self._log.writing() as conn:
            statement = insert_sql(conn.dialect.paramstyle, self._log.sql_name("hexa_log"))
            if statement is not None:
                # The DBAPI's executemany directly: no per-row parameter processing.
                await conn.exec_driver_sql(statement, rows)
            else:
                await conn.execute(
                    self._log.table("hexa_log").insert(),
                    [dict(zip(_COLUMNS, r, strict=True)) for r in rows],
                )
            if self._log.dialect == "postgresql" and self._log.options.notify:
                names = "\n".join(sorted(channels))
                payload = names if len(names.encode()) < 7000 else ""
                await conn.execute(
                    text("SELECT pg_notify(:c, :p)"), {"c": self._log.channel, "p": payload}
                )
        return channels

    async def close(self) -> None:
        """Let queued publishes finish, then stop the writer."""
        self._closed = True
        writer = self._writer
        if writer is not None and not writer.done():
            await asyncio.gather(writer, return_exceptions=True)
