"""The emit side of the SQL driver: group-committed batch inserts into ``hexa_log``."""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import deque
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec
from sqlalchemy import text

from ...driver import RawRecord, refuse
from ...errors import ClosedError, InvalidEventError, NotStoredError
from .log import SqlLog

_encode_headers = msgspec.msgpack.Encoder().encode


_COLUMNS = ("channel", "part", "msg_key", "headers", "body", "created_ms", "visible_ms")
_MAX_NOT_BEFORE = 2**53 / 1000  # seconds; stored as milliseconds in a BIGINT
MAX_CHANNEL = 255
"""Characters of a channel name the log's ``channel`` column holds (VARCHAR(255))."""


def check_columns(records: Sequence[RawRecord]) -> None:
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
    """Rows for ``hexa_log`` in the order of :data:`_COLUMNS` (records already checked); a
    row's partition is the CRC-32 of its key's UTF-8 bytes modulo ``partitions``."""
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


def insert_sql(paramstyle: str, table: str) -> str | None:
    """A plain INSERT into ``table`` (quoted SQL) for the DBAPI's paramstyle (None: use
    SQLAlchemy Core instead)."""
    if (mark := {"qmark": "?", "numeric_dollar": "${}", "format": "%s"}.get(paramstyle)) is None:
        return None
    marks = ", ".join(mark.format(n) for n in range(1, len(_COLUMNS) + 1))
    return f"INSERT INTO {table} ({', '.join(_COLUMNS)}) VALUES ({marks})"


_ARRAY_TYPES = ("varchar", "smallint", "text", "bytea", "bytea", "bigint", "bigint")
"""PostgreSQL types of :data:`_COLUMNS`, for :func:`unnest_sql`."""


def unnest_sql(table: str) -> str:
    """One INSERT into ``table`` (quoted SQL) of any number of rows, given as one array per
    column of :data:`_COLUMNS` (asyncpg's ``$1`` placeholders). Rows are inserted in array
    order (``WITH ORDINALITY ... ORDER BY``, not left to the plan), so their ids follow it."""
    arrays = ", ".join(f"${n}::{kind}[]" for n, kind in enumerate(_ARRAY_TYPES, 1))
    columns = ", ".join(_COLUMNS)
    return (
        f"INSERT INTO {table} ({columns}) SELECT {columns} FROM unnest({arrays}) "
        f"WITH ORDINALITY AS given ({columns}, position) ORDER BY position"
    )


class _Request(NamedTuple):
    rows: list[tuple[Any, ...]]
    future: asyncio.Future[None]


class Producer:
    """One writer task writes the queued ``publish`` calls in as few transactions as possible
    (up to ``publish_batch`` rows each, one call's rows never split): each caller returns once
    its transaction committed, or gets a :class:`DriverError` and none of its rows were
    stored."""

    def __init__(self, log: SqlLog) -> None:
        self._log = log
        self._queue: deque[_Request] = deque()
        self._writer: asyncio.Task[None] | None = None

    async def publish(self, records: Sequence[RawRecord]) -> None:
        rows = to_rows(records, await self._log.ready())  # ClosedError once the log is closed
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Request(rows, future))
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
                _answer(batch, ClosedError("the SQL driver was closed"))
                raise
            except Exception as exc:
                _answer(batch, self._log.error("publish", exc))
                continue
            _answer(batch, None)
            self._log.committed(channels)

    async def _write(self, batch: list[_Request]) -> set[str]:
        rows = [row for request in batch for row in request.rows]
        channels = {row[0] for row in rows}
        async with self._log.writing() as conn:
            table = self._log.sql_name("hexa_log")
            statement = insert_sql(conn.dialect.paramstyle, table)
            if conn.dialect.driver == "asyncpg":
                # One statement for the batch, its columns as arrays: asyncpg's executemany
                # has the server run the INSERT once per row.
                columns = tuple(list(column) for column in zip(*rows, strict=True))
                await conn.exec_driver_sql(unnest_sql(table), columns)
            elif statement is not None:
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
        """Let queued publishes finish (the log is closed: no new ones)."""
        writer = self._writer
        if writer is not None and not writer.done():
            await asyncio.gather(writer, return_exceptions=True)


def _answer(batch: list[_Request], error: BaseException | None) -> None:
    """Tell the callers of ``batch``: stored (``error`` None), or ``error``."""
    for request in batch:
        if error is None:
            request.future.set_result(None)
        else:
            request.future.set_exception(error)
