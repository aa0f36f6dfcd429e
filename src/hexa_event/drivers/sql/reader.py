"""Reading the log: rows after each partition's cursor (on PostgreSQL only those of
transactions older than the oldest running one, in (txid, id) order, so a late commit is
never skipped: docs/engines/sql.md, "Internals"), stored headers, a group's lag."""

from __future__ import annotations

import functools
import operator
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection

from .log import SqlLog
from .partitions import Part

_COLUMNS = "id, txid, channel, part, msg_key, headers, body, created_ms, visible_ms"
_POSITION = operator.itemgetter(1, 0)
"""A row's position, (txid, id)."""
_strict_headers = msgspec.msgpack.Decoder(dict[str, bytes]).decode
_any = msgspec.msgpack.Decoder().decode


_BINARY = (bytes, bytearray, memoryview)


def blob(value: object) -> bytes:
    """A BLOB column's value as bytes: SQLite also stores what a foreign writer gave it as
    text or a number (as its UTF-8 text, then)."""
    if type(value) is bytes:  # what both databases hand over: no copy
        return value
    if isinstance(value, _BINARY):
        return bytes(value)
    return str(value).encode("utf-8", "surrogatepass")


def decode_headers(raw: object) -> dict[str, bytes]:
    """The stored headers of a row. A row written by an older or foreign writer with values
    that are not bytes keeps what can be read (text as UTF-8, other values dropped); an
    undecodable blob gives no headers: the row is still delivered (the core decides)."""
    raw = blob(raw)
    try:
        return _strict_headers(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        pass
    try:
        value = _any(raw)
    except (msgspec.DecodeError, RecursionError):
        return {}
    if not isinstance(value, dict):
        return {}
    return {
        key: item.encode("utf-8", "surrogatepass") if isinstance(item, str) else item
        for key, item in value.items()
        if isinstance(key, str) and isinstance(item, bytes | str)
    }


def fetch_sql(dialect: str, count: int, table: str = "hexa_log") -> str:
    """One statement reading up to ``:n`` rows after a cursor from each of ``count``
    partitions of ``table`` (quoted SQL; bind params ``c<i>``, ``p<i>``, ``t<i>``,
    ``i<i>``)."""
    pg = dialect == "postgresql"  # SQLite: ids follow commit order, its index has no txid
    after = "(txid, id) > (:t{i}, :i{i}) AND txid < (SELECT x FROM h) ORDER BY txid, id"
    where = "channel = :c{i} AND part = :p{i} AND " + (after if pg else "id > :i{i} ORDER BY id")
    union = " UNION ALL ".join(
        f"SELECT * FROM (SELECT {_COLUMNS} FROM {table} WHERE {where.format(i=i)} LIMIT :n) s{i}"
        for i in range(count)
    )
    if pg:
        horizon = "(pg_snapshot_xmin(pg_current_snapshot())::text)::bigint"
        return f"WITH h AS MATERIALIZED (SELECT {horizon} AS x) {union}"
    return union


@functools.lru_cache(maxsize=64)
def _fetch_statement(dialect: str, count: int, table: str) -> TextClause:
    """:func:`fetch_sql` as a statement, built once per shape (parsing its bind parameters
    and SQLAlchemy's cache key cost more than running it)."""
    return text(fetch_sql(dialect, count, table))


@functools.lru_cache(maxsize=64)
def _numbered_fetch(count: int, table: str) -> tuple[str, tuple[str, ...]]:
    """:func:`fetch_sql` for PostgreSQL with asyncpg's ``$1`` placeholders, and the names of
    the parameters they stand for, in order."""
    names: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        return f"${names.setdefault(match[1], len(names) + 1)}"

    sql = re.sub(r"(?<!:):(\w+)", number, fetch_sql("postgresql", count, table))
    return sql, tuple(names)


async def _fetch_rows(conn: AsyncConnection, count: int, table: str, params: dict[str, Any]) -> Any:
    """The fetch statement's rows. On aiosqlite and asyncpg through the database driver's own
    connection (the hot read: one call to aiosqlite's thread instead of four; no
    transaction around it on asyncpg, a single statement needs none; rows as the driver
    gives them, no SQLAlchemy row around each); through SQLAlchemy for any other driver."""
    driver = conn.dialect.driver
    if driver == "aiosqlite":
        raw: Any = (await conn.get_raw_connection()).driver_connection
        return await raw.execute_fetchall(fetch_sql("sqlite", count, table), params)
    if driver == "asyncpg":
        sql, names = _numbered_fetch(count, table)
        raw = (await conn.get_raw_connection()).driver_connection
        return await raw.fetch(sql, *[params[name] for name in names])
    statement = _fetch_statement(conn.dialect.name, count, table)
    return (await conn.execute(statement, params)).all()


async def read_partitions(
    log: SqlLog, parts: Sequence[Part], per: int
) -> dict[tuple[str, int], list[Any]]:
    """Up to ``per`` rows after each partition's cursor, by (channel, partition), in order."""
    params: dict[str, Any] = {"n": per}
    for i, part in enumerate(parts):
        params[f"c{i}"] = part.channel
        params[f"p{i}"] = part.number
        params[f"t{i}"], params[f"i{i}"] = part.cursor  # SQLite's statement has no txid
    async with log.connection() as conn:
        rows = await _fetch_rows(conn, len(parts), log.sql_name("hexa_log"), params)
    by_part: dict[tuple[str, int], list[Any]] = defaultdict(list)
    for row in rows:
        by_part[(row[2], row[3])].append(row)
    for part_rows in by_part.values():  # UNION ALL keeps no order; mostly sorted already
        part_rows.sort(key=_POSITION)
    return by_part


async def read_lag(log: SqlLog, group: str) -> dict[str, int]:
    """Per channel the group has positions on, the rows not yet settled by ``group``."""
    async with log.connection() as conn:
        return await lag_on(conn, log.sql_name, group)


async def lag_on(
    conn: AsyncConnection, sql_name: Callable[[str], str], group: str
) -> dict[str, int]:
    """:func:`read_lag` on ``conn``, in the tables ``sql_name`` names (``"hexa_log"`` -> its
    quoted SQL name): one grouped query."""
    log_t, pos_t = sql_name("hexa_log"), sql_name("hexa_positions")
    acked_t, redo_t = sql_name("hexa_acked"), sql_name("hexa_redeliveries")
    statement = (  # row values compare (txid, id) on both databases (txid is 0 on SQLite)
        f"SELECT l.channel, COUNT(*) FROM {pos_t} p JOIN {log_t} l "
        "ON l.channel = p.channel AND l.part = p.part AND (l.txid, l.id) > (p.pos_tx, p.pos_id) "
        "WHERE p.group_name = :g GROUP BY l.channel "
        f"UNION ALL SELECT a.channel, -COUNT(*) FROM {pos_t} p JOIN {acked_t} a "
        "ON a.group_name = p.group_name AND a.channel = p.channel AND a.part = p.part "
        "AND (a.txid, a.log_id) > (p.pos_tx, p.pos_id) WHERE p.group_name = :g "
        "GROUP BY a.channel "
        f"UNION ALL SELECT r.channel, COUNT(*) FROM {redo_t} r WHERE r.group_name = :g "
        "GROUP BY r.channel "
        f"UNION ALL SELECT p.channel, 0 FROM {pos_t} p WHERE p.group_name = :g "
        "GROUP BY p.channel"
    )
    rows = (await conn.execute(text(statement), {"g": group})).all()
    out: dict[str, int] = {}
    for channel, count in rows:
        out[channel] = out.get(channel, 0) + int(count)
    return {channel: max(0, count) for channel, count in out.items()}
