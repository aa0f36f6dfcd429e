"""What ``hexa-event doctor`` reports of the SQL log beyond the driver's check: the
database's answer to a session, the driver's tables (of its ``schema``/``table_prefix``
set), which channels have records, each group's state (the channels it is on, its live
members, its lag), the outbox and inbox tables. Read-only: creates nothing."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Table, distinct, func, inspect, select, text, union
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from ..._sql.clock import now_ms
from ..._sql.urls import redact
from ...driver import Finding
from ..kit.findings import group_finding, group_state
from .options import TABLES, SqlOptions
from .reader import lag_on
from .schema import async_url, metadata, sqlite_file


async def diagnose(
    options: SqlOptions, dialect: str, channels: Sequence[str], groups: Sequence[str]
) -> list[Finding]:
    """Findings on the database, the tables, ``channels`` and ``groups``."""
    path = sqlite_file(options.url)
    if path is not None and not await asyncio.to_thread(os.path.exists, path):
        fix = "check the path if you expected existing events (sqlite:///relative.db, "
        fix += "sqlite:////absolute.db)"
        why = f"{path} does not exist yet; the driver will create it"
        return [Finding("database file", "warn", why, fix), *_new_groups(groups)]
    engine = create_async_engine(async_url(options.url))
    try:
        return await _inspect(engine, options, dialect, channels, groups)
    except Exception as exc:
        shown = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return [_refusal(shown.replace(options.url, redact(options.url)))]
    finally:
        await engine.dispose()


async def _inspect(
    engine: Any,
    options: SqlOptions,
    dialect: str,
    channels: Sequence[str],
    groups: Sequence[str],
) -> list[Finding]:
    schema, prefix = options.schema, options.table_prefix
    md = metadata(dialect, schema=schema, table_prefix=prefix)
    wanted = list(md.tables.values())
    where = f" (schema {schema})" if schema else ""
    found: list[Finding] = []
    async with engine.connect() as conn:

        def names(sync_conn: Any) -> set[str]:
            inspector = inspect(sync_conn)
            if schema is not None and schema not in inspector.get_schema_names():
                return set()
            return set(inspector.get_table_names(schema=schema))

        tables = set(await conn.run_sync(names))
        quote = conn.dialect.identifier_preparer.format_table
        found.append(Finding("connect", "ok", f"connected to {redact(options.url)}"))
        missing = [t.name for t in wanted if t.name not in tables]
        if missing:
            why = f"schema not migrated: missing tables {', '.join(missing)}{where}"
            fix = "let the driver create them on first use (create_tables=True, the default; "
            fix += "needs CREATE rights) or run hexa_event.drivers.sql.migrate(URL)"
            found.append(Finding("schema", "warn", why, fix))
            found += _new_groups(groups)
        else:
            found.append(Finding("schema", "ok", f"the SQL driver's tables exist{where}"))
            for table in wanted:
                await conn.execute(text(f"SELECT 1 FROM {quote(table)} LIMIT 1"))
            found.append(Finding("permissions", "ok", "can read the log and the group positions"))
            channels_table = next(t for t in wanted if t.name.endswith("channels"))
            rows = await conn.execute(text(f"SELECT channel FROM {quote(channels_table)}"))
            known = {row[0] for row in rows}
            for channel in channels:
                state = "has records" if channel in known else "no records yet"
                found.append(Finding(f"channel {channel}", "ok", state))
            ours = {name: md.tables[options.names.qualified(name)] for name in TABLES}
            for group in groups:
                found.append(await _group(conn, ours, quote, group))
        for optional in (f"{prefix}hexa_outbox", f"{prefix}hexa_inbox"):
            if optional in tables:
                found.append(Finding(optional, "ok", f"present{where}"))
    return found


def _new_groups(groups: Sequence[str]) -> list[Finding]:
    """The findings on ``groups`` where the tables are not there yet: all new."""
    return [group_finding(f"group {group}", None) for group in groups]


async def _group(
    conn: AsyncConnection, tables: dict[str, Table], quote: Callable[[Table], str], group: str
) -> Finding:
    """The finding on ``group``: new (no row of it in the positions or members tables), or
    the channels it is on, its live members (leases not expired) and its lag per channel
    (the query of ``Subscription.lag``: :func:`.reader.lag_on`)."""
    positions, members = tables["hexa_positions"], tables["hexa_members"]
    on = union(
        select(positions.c.channel).where(positions.c.group_name == group),
        select(members.c.channel).where(members.c.group_name == group),
    )
    channels = sorted((await conn.execute(on)).scalars())
    if not channels:
        return group_finding(f"group {group}", None)
    live = select(func.count(distinct(members.c.member_id))).where(
        members.c.group_name == group, members.c.expires_ms > now_ms()
    )
    count = (await conn.execute(live)).scalar_one()
    lag = await lag_on(conn, lambda name: quote(tables[name]), group)
    behind = {channel: lag.get(channel, 0) for channel in channels}
    return group_state(f"group {group}", channels, count, behind)


def _refusal(shown: str) -> Finding:
    """The finding for the database's refusal ``shown`` (its first line, redacted)."""
    lowered = shown.lower()
    if any(word in lowered for word in ("password", "authentication", "role")):
        name, message, kind = "connect", f"the database refused the credentials: {shown}", "auth"
        fix = "fix the user and password (give them in HEXA_EVENT_URL, not on the command line)"
    elif "does not exist" in lowered and "database" in lowered:
        name, message, kind = "database", shown, "config"
        fix = "create the database (CREATE DATABASE ...) or fix its name in the URL"
    elif "permission denied" in lowered:
        name, message, kind = "permissions", shown, "auth"
        fix = "grant SELECT, INSERT, UPDATE, DELETE on the hexa_* tables to this user"
    else:
        name, message, kind = "connect", f"cannot reach the database: {shown}", "unreachable"
        fix = "start the database or fix host, port and database name in the URL"
    return Finding(name, "fail", message, fix, kind)
