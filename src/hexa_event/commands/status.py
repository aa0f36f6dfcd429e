"""``hexa-event outbox status --db URL``: backlog, oldest unsent row, rows sent per second.

``--schema``/``--table-prefix`` (or ``?schema=``/``?table_prefix=`` in the URL) read the
outbox table of one service among several sharing the database.

The send rate counts rows sent in the last ``--window`` (default one minute), from the sent
log (and rows marked sent in place by older relays); a relay run with ``--delete-sent``
records nothing sent, so the rate shows as unknown.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta
from typing import Any

from ..redaction import redact_url as redact
from ..redaction import scrub, url_secrets
from ._common import (
    OK,
    USAGE,
    CommandError,
    database_url_problem,
    json_argument,
    print_json,
    require_existing_sqlite,
    seconds,
)

_ASYNC = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def add(outbox_commands: Any) -> None:
    p = outbox_commands.add_parser(
        "status",
        aliases=["stats"],
        help="backlog, oldest unsent row and rows sent per second (alias: stats, deprecated)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--db",
        default=os.environ.get("HEXA_EVENT_DB"),
        metavar="URL",
        help="database URL (default: $HEXA_EVENT_DB)",
    )
    p.add_argument("--schema", default=None, help="PostgreSQL schema of the outbox table")
    p.add_argument(
        "--table-prefix", default="", metavar="PREFIX", help="prefix of the outbox table name"
    )
    p.add_argument(
        "--window", type=seconds, default=60.0, help="seconds over which to measure the send rate"
    )
    json_argument(p)
    p.set_defaults(coro=run)


def async_engine(db: str) -> Any:
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    url = make_url(db)
    backend = url.get_backend_name()
    if "+" not in url.drivername and backend in _ASYNC:
        url = url.set(drivername=_ASYNC[backend])
    elif url.drivername == "postgres":
        url = url.set(drivername=_ASYNC["postgresql"])
    return create_async_engine(url)


async def measure(
    db: str, window: float, *, schema: str | None = None, table_prefix: str = ""
) -> dict[str, Any]:
    """The outbox's backlog, oldest unsent age and send rate over ``window`` seconds.

    ``db`` may carry ``?schema=``/``?table_prefix=``; raises ConfigurationError for bad
    names (before connecting)."""
    from .._sql.names import url_and_names
    from ..outbox import outbox_stats, table_for
    from ..outbox.sentlog import has_sent_log, sent_since

    db, schema, table_prefix = url_and_names(
        db, schema, table_prefix, owner="--schema/--table-prefix"
    )
    t = table_for(schema, table_prefix)
    engine = async_engine(db)
    try:
        stats = await outbox_stats(engine, t)
        since = _utcnow() - timedelta(seconds=window)
        async with engine.connect() as conn:
            logged = await has_sent_log(conn, t)
            sent_recently, ever_sent = await sent_since(conn, t, since, log_exists=logged)
    finally:
        await engine.dispose()
    rate = round(sent_recently / window, 3) if ever_sent or stats.backlog == 0 else None
    return {
        "backlog": stats.backlog,
        "parked": stats.parked,
        "oldest_unsent_age": stats.oldest_unsent_age,
        "sent_per_second": rate,
        "window": window,
    }


def _utcnow() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


async def run(args: argparse.Namespace) -> int:
    if getattr(args, "action", None) == "stats":
        print(
            "hexa-event: note: `outbox stats` is deprecated and will be removed; use "
            "`outbox status` (the same backlog and oldest unsent age, plus the send rate)",
            file=sys.stderr,
        )
    if not args.db:
        raise CommandError("give --db URL or set HEXA_EVENT_DB", USAGE)
    problem = database_url_problem(args.db)
    if problem:
        raise CommandError(problem, USAGE)
    from .._sql.names import url_and_names
    from ..errors import ConfigurationError
    from ..outbox import table_for

    try:  # bad names are bad usage, whether or not the database exists
        _, schema, prefix = url_and_names(
            args.db, args.schema, args.table_prefix, owner="--schema/--table-prefix"
        )
        table_for(schema, prefix)
    except ConfigurationError as exc:
        raise CommandError(str(exc), USAGE) from None
    require_existing_sqlite(args.db)
    try:
        status = await measure(
            args.db, args.window, schema=args.schema, table_prefix=args.table_prefix
        )
    except ConfigurationError as exc:
        raise CommandError(str(exc), USAGE) from None
    except Exception as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        text = scrub(text.replace(args.db, redact(args.db)), url_secrets(args.db))
        raise CommandError(
            f"cannot read the outbox in {redact(args.db)}: {text}"
            " (is the database up, and was `hexa-event outbox migrate` run?)"
        ) from None
    if args.json:
        print_json(status)
        return OK
    rate = "unknown (rows are deleted once sent)"
    if status["sent_per_second"] is not None:
        rate = f"{status['sent_per_second']:g}/s over the last {args.window:g}s"
    print(f"backlog        {status['backlog']} unsent rows")
    print(f"oldest unsent  {_age(status['oldest_unsent_age'])}")
    if status["parked"]:
        print(
            f"parked         {status['parked']} rows the target refused for good "
            "(last_error says why; hexa_event.outbox.requeue_parked() sends them again)"
        )
    print(f"sent           {rate}")
    return OK
