"""How far behind a group is: per channel, log rows past its stored positions.

A row is behind when it lies after the group's stored position of its (channel, partition)
and was not acked above it (``hexa_acked``), plus the records the group gave back with a
delay (``hexa_redeliveries``: the position moved past them, they are not settled). Rows a
member has fetched but whose settlement is not written yet are behind too (the position
moves only over a settled prefix). Three grouped counts, each served by an index: the log's
``(channel, part, [txid,] id)`` index, and the primary keys of the other two.
"""

from __future__ import annotations

from sqlalchemy import text

from .log import SqlLog


def lag_sql(log: SqlLog) -> str:
    """The statement: ``(channel, rows behind)`` for the group ``:g``."""
    log_t, pos_t = log.sql_name("hexa_log"), log.sql_name("hexa_positions")
    acked_t, redo_t = log.sql_name("hexa_acked"), log.sql_name("hexa_redeliveries")
    if log.dialect == "postgresql":
        after = "(l.txid, l.id) > (p.pos_tx, p.pos_id)"
        acked_after = "(a.txid, a.log_id) > (p.pos_tx, p.pos_id)"
    else:  # SQLite: ids follow commit order (txid is 0)
        after = "l.id > p.pos_id"
        acked_after = "a.log_id > p.pos_id"
    return (
        f"SELECT l.channel, COUNT(*) FROM {pos_t} p JOIN {log_t} l "
        f"ON l.channel = p.channel AND l.part = p.part AND {after} "
        "WHERE p.group_name = :g GROUP BY l.channel "
        f"UNION ALL SELECT a.channel, -COUNT(*) FROM {pos_t} p JOIN {acked_t} a "
        "ON a.group_name = p.group_name AND a.channel = p.channel AND a.part = p.part "
        f"AND {acked_after} WHERE p.group_name = :g GROUP BY a.channel "
        f"UNION ALL SELECT r.channel, COUNT(*) FROM {redo_t} r WHERE r.group_name = :g "
        "GROUP BY r.channel "
        f"UNION ALL SELECT p.channel, 0 FROM {pos_t} p WHERE p.group_name = :g "
        "GROUP BY p.channel"
    )


async def read_lag(log: SqlLog, group: str) -> dict[str, int]:
    """Per channel the group has positions on, the rows not yet settled by ``group``."""
    async with log.reading() as conn:
        rows = (await conn.execute(text(lag_sql(log)), {"g": group})).all()
    out: dict[str, int] = {}
    for channel, count in rows:
        out[channel] = out.get(channel, 0) + int(count)
    return {channel: max(0, count) for channel, count in out.items()}
