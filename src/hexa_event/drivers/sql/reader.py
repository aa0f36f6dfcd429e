"""Reading the log: rows after each partition's cursor, due redeliveries, stored headers.

On PostgreSQL rows are ordered by (inserting transaction id, id) and only rows of
transactions older than the oldest running one are read
(``txid < pg_snapshot_xmin(pg_current_snapshot())``), so a transaction that took an id early
and commits late is never skipped. SQLite has one writer at a time, so ids follow commit
order.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy import and_, select, text

from .log import SqlLog
from .partitions import Part

_COLUMNS = "id, txid, channel, part, msg_key, headers, body, created_ms, visible_ms"
_strict_headers = msgspec.msgpack.Decoder(dict[str, bytes]).decode
_any = msgspec.msgpack.Decoder().decode


def decode_headers(raw: bytes) -> dict[str, bytes]:
    """The stored headers of a row. A row written by an older or foreign writer with values
    that are not bytes keeps what can be read (text as UTF-8, other values dropped); an
    undecodable blob gives no headers: the row is still delivered (the core decides)."""
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
    headers: dict[str, bytes] = {}
    for key, item in value.items():
        if isinstance(key, str) and isinstance(item, bytes | str):
            headers[key] = item.encode("utf-8", "surrogatepass") if isinstance(item, str) else item
    return headers


def fetch_sql(dialect: str, count: int, table: str = "hexa_log") -> str:
    """One statement reading up to ``:n`` rows after a cursor from each of ``count``
    partitions of ``table`` (quoted SQL; bind params ``c<i>``, ``p<i>``, ``t<i>``,
    ``i<i>``)."""
    parts: list[str] = []
    for i in range(count):
        if dialect == "postgresql":
            where = (
                f"channel = :c{i} AND part = :p{i} AND (txid, id) > (:t{i}, :i{i}) "
                "AND txid < (SELECT x FROM h) ORDER BY txid, id"
            )
        else:
            where = f"channel = :c{i} AND part = :p{i} AND id > :i{i} ORDER BY id"
        parts.append(f"SELECT * FROM (SELECT {_COLUMNS} FROM {table} WHERE {where} LIMIT :n) s{i}")
    union = " UNION ALL ".join(parts)
    if dialect == "postgresql":
        horizon = "(pg_snapshot_xmin(pg_current_snapshot())::text)::bigint"
        return f"WITH h AS MATERIALIZED (SELECT {horizon} AS x) {union}"
    return union


async def read_partitions(
    log: SqlLog, parts: Sequence[Part], per: int
) -> dict[tuple[str, int], list[Any]]:
    """Up to ``per`` rows after each partition's cursor, by (channel, partition), in order."""
    dialect = log.dialect
    params: dict[str, Any] = {"n": per}
    for i, part in enumerate(parts):
        params[f"c{i}"] = part.channel
        params[f"p{i}"] = part.number
        params[f"i{i}"] = part.cursor[1]
        if dialect == "postgresql":
            params[f"t{i}"] = part.cursor[0]
    async with log.reading() as conn:
        result = await conn.execute(
            text(fetch_sql(dialect, len(parts), log.sql_name("hexa_log"))), params
        )
        rows = result.all()
    by_part: dict[tuple[str, int], list[Any]] = {}
    for row in rows:
        key = (row[2], row[3])
        bucket = by_part.get(key)
        if bucket is None:
            by_part[key] = [row]
        else:
            bucket.append(row)
    for part_rows in by_part.values():
        if any((a[1], a[0]) >= (b[1], b[0]) for a, b in itertools.pairwise(part_rows)):
            part_rows.sort(key=lambda r: (r[1], r[0]))
    return by_part


async def read_due_redeliveries(
    log: SqlLog, group: str, member_id: str, now_ms: int, limit: int
) -> Sequence[Any]:
    """Redeliveries of ``group`` due by ``now_ms`` in partitions ``member_id`` holds."""
    r = log.table("hexa_redeliveries")
    p = log.table("hexa_positions")
    rows = log.table("hexa_log")
    query = (
        select(
            r.c.log_id,
            r.c.attempts,
            rows.c.txid,
            rows.c.channel,
            rows.c.part,
            rows.c.msg_key,
            rows.c.headers,
            rows.c.body,
            rows.c.created_ms,
        )
        .select_from(
            r.join(
                p,
                and_(
                    p.c.group_name == r.c.group_name,
                    p.c.channel == r.c.channel,
                    p.c.part == r.c.part,
                ),
            ).join(rows, rows.c.id == r.c.log_id)
        )
        .where(
            r.c.group_name == group,
            p.c.owner == member_id,
            r.c.visible_ms <= now_ms,
        )
        .order_by(r.c.visible_ms)
        .limit(limit)
    )
    async with log.reading() as conn:
        return (await conn.execute(query)).all()
