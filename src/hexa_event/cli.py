"""The ``hexa-event`` command: run the outbox relay and the cleaners, show DDL, migrate.

    hexa-event outbox migrate --db postgresql://app@db/app
    hexa-event outbox ddl --dialect postgresql
    hexa-event outbox relay --db postgresql://app@db/app --to kafka://127.0.0.1:9092
    hexa-event outbox clean --db ... --retention 7d [--every 10m]
    hexa-event outbox status --db ...    (``outbox stats``: its deprecated alias)
    hexa-event inbox migrate|ddl|clean ...

Every command on the outbox or inbox table takes ``--schema`` (PostgreSQL) and
``--table-prefix`` (or ``?schema=...&table_prefix=...`` in the ``--db`` URL) to work on the
tables of one service among several sharing a database.

``--db`` may be left out and given as ``HEXA_EVENT_DB`` instead (and ``--to`` as
``HEXA_EVENT_TO``), which keeps passwords out of the process list. Passwords never appear
in logs or error messages. Exit status: 0 done, 1 failed, 2 bad usage (the operator
commands add theirs: docs/cli.md).

Each command group is added by one ``add_*_commands(subparsers)`` function, so new groups
(``dlq replay``...) plug in the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from .numbers import whole_number

log = logging.getLogger("hexa_event.cli")

Command = Callable[[argparse.Namespace], int]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(text: str) -> timedelta:
    """``500ms``, ``30s``, ``10m``, ``12h``, ``7d``, ``2w`` or plain seconds, at most
    :data:`~hexa_event.commands.LONGEST` seconds (31 years)."""
    from .commands import LONGEST

    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(
            f"bad duration {text!r}: use a number with a unit, e.g. 30s, 10m, 12h, 7d"
        )
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not seconds <= LONGEST:  # 400 digits read as infinite; a retention of a million
        # days reached before the year 1 (OverflowError when cleaning)
        raise argparse.ArgumentTypeError(
            f"duration {text!r} is too long: at most {LONGEST:g} seconds (about 31 years)"
        )
    return timedelta(seconds=seconds)


def _period(text: str) -> timedelta:
    """A duration above 0 (``--every``, ``--lease``, ``--poll-interval``)."""
    value = parse_duration(text)
    if not value:
        raise argparse.ArgumentTypeError(f"expected a duration above 0, e.g. 10m, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = whole_number(text, 1)
    if value is None:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _redact(url: str) -> str:
    from .redaction import redact_url

    return redact_url(url)


def _db_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=os.environ.get("HEXA_EVENT_DB"),
        metavar="URL",
        help="database URL, e.g. postgresql://user@host/db or sqlite:///app.db "
        "(default: $HEXA_EVENT_DB)",
    )


class UsageError(Exception):
    """Bad usage found after parsing (a missing ``--db``): exit status 2, as argparse's."""


def _require_db(args: argparse.Namespace) -> str:
    """The ``--db`` URL without ``schema``/``table_prefix`` query parameters (those are
    merged into ``args.schema``/``args.table_prefix``)."""
    if not args.db:
        raise UsageError("give --db URL or set HEXA_EVENT_DB")
    from .commands import database_url_problem

    problem = database_url_problem(str(args.db))
    if problem:
        raise UsageError(problem)
    return _split_names(args, str(args.db))


def _names_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--schema",
        default=None,
        help="PostgreSQL schema of the table (default: the search_path; also ?schema= in "
        "the --db URL)",
    )
    parser.add_argument(
        "--table-prefix",
        default="",
        metavar="PREFIX",
        help="prefix of the table name, e.g. billing_ for billing_hexa_outbox (also "
        "?table_prefix= in the --db URL)",
    )


def _split_names(args: argparse.Namespace, db: str) -> str:
    from ._sql.names import url_and_names

    url, args.schema, args.table_prefix = url_and_names(
        db, args.schema, args.table_prefix, owner="--schema/--table-prefix"
    )
    return url


def _names(args: argparse.Namespace) -> dict[str, Any]:
    return {"schema": args.schema, "table_prefix": args.table_prefix}


def _dialect_name(text: str) -> str:
    """``postgres`` (as in ``postgres://`` URLs, which the drivers take) is ``postgresql``."""
    return "postgresql" if text.strip().lower() == "postgres" else text


def _dialect_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dialect",
        default="postgresql",
        type=_dialect_name,
        choices=["postgresql", "sqlite", "mysql", "mariadb"],
        help="SQL dialect of the printed DDL (default postgresql; postgres is the same)",
    )


# -- outbox ----------------------------------------------------------------------------------


def _migrate(package: str, table: str, args: argparse.Namespace) -> int:
    module = importlib.import_module(f"hexa_event.{package}")
    db = _require_db(args)
    asyncio.run(module.migrate_async(db, **_names(args)))
    print(f"{module.table_for(**_names(args)).fullname} is ready in {_redact(db)}")
    return 0


def _ddl(package: str, args: argparse.Namespace) -> int:
    module = importlib.import_module(f"hexa_event.{package}")
    sys.stdout.write(module.ddl(args.dialect, **_names(args)))
    return 0


def _clean_command(package: str, cleaner: str, args: argparse.Namespace) -> int:
    cleaner_type = getattr(importlib.import_module(f"hexa_event.{package}"), cleaner)
    return asyncio.run(_clean(args, cleaner_type))


def _add_table_commands(
    sub: argparse._SubParsersAction[Any],
    *,
    package: str,
    table: str,
    cleaner: str,
    clean_help: str,
) -> None:
    """``migrate``, ``ddl`` and ``clean`` of one table (the outbox's and the inbox's)."""
    p = sub.add_parser("migrate", help=f"create the {table} table if missing")
    _db_argument(p)
    _names_arguments(p)
    p.set_defaults(func=functools.partial(_migrate, package, table))

    p = sub.add_parser("ddl", help=f"print the DDL of {table}")
    _dialect_argument(p)
    _names_arguments(p)
    p.set_defaults(func=functools.partial(_ddl, package))

    p = sub.add_parser("clean", help=clean_help)
    _db_argument(p)
    _names_arguments(p)
    p.add_argument("--retention", type=parse_duration, default=timedelta(days=7))
    p.add_argument("--batch-size", type=_positive_int, default=1000)
    p.add_argument("--every", type=_period, default=None, help="repeat until stopped")
    p.set_defaults(func=functools.partial(_clean_command, package, cleaner))


def _install_stop(stop: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Unix
            loop.add_signal_handler(sig, stop)


async def _relay(args: argparse.Namespace) -> int:
    from .connect import connect
    from .outbox import OutboxRelay

    db = _require_db(args)
    if not args.to:
        raise UsageError("give --to DRIVER_URL (e.g. kafka://127.0.0.1:9092) or set HEXA_EVENT_TO")
    driver = connect(args.to)
    try:
        relay = OutboxRelay(
            db,
            driver,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            pipeline=args.pipeline,
            claim_mode=args.claim_mode,
            keep_sent=not args.delete_sent,
            lease=args.lease.total_seconds(),
            retry_delay=args.retry_delay.total_seconds(),
            poll_interval=args.poll_interval.total_seconds(),
            listen=not args.no_listen,
            **_names(args),
        )
    except BaseException:
        await driver.close()
        raise
    try:
        if args.once:
            progress = asyncio.create_task(_progress(relay, args.progress.total_seconds()))
            try:
                sent = await relay.drain(max_seconds=args.lease.total_seconds() * 100)
            finally:
                progress.cancel()
            print(f"sent {sent} rows")
            if relay.failed_batches:
                print(
                    f"hexa-event: error: {relay.failed_batches} batch(es) failed to publish; "
                    "their rows stay unsent for the next run (see the log for the cause)",
                    file=sys.stderr,
                )
                return 1
            return 0
        _install_stop(relay.stop)
        log.info(
            "relaying %s -> %s (batch %d, concurrency %d)",
            _redact(db),
            _redact(args.to),
            args.batch_size,
            args.concurrency,
        )
        reporter = asyncio.create_task(_report(relay, args.stats_every.total_seconds()))
        try:
            await relay.run()
        finally:
            reporter.cancel()
        log.info("relay stopped")
        return 0
    finally:
        await relay.close()
        await driver.close()


async def _progress(relay: Any, every: float) -> None:
    """While ``--once`` drains a backlog: rows relayed, rate, what is left (to stderr)."""
    if every <= 0:
        return
    began = time.monotonic()
    while True:
        await asyncio.sleep(every)
        try:
            s = await relay.stats()
        except Exception as exc:
            print(f"hexa-event: progress unavailable: {exc}", file=sys.stderr)
            continue
        rate = s.published / max(time.monotonic() - began, 1e-9)
        oldest = "-" if s.oldest_unsent_age is None else f"{s.oldest_unsent_age:.1f}s"
        print(
            f"relayed {s.published:,} rows ({rate:,.0f}/s), backlog "
            f"{'at least ' if s.backlog_at_least else ''}{s.backlog:,}, "
            f"oldest unsent {oldest}, failed batches {s.failed_batches}",
            file=sys.stderr,
            flush=True,
        )


async def _report(relay: Any, every: float) -> None:
    if every <= 0:
        return
    while True:
        await asyncio.sleep(every)
        try:
            s = await relay.stats()
        except Exception as exc:
            log.warning("outbox stats unavailable: %s", exc)
            continue
        log.info(
            "outbox backlog=%s oldest_unsent_age=%s published=%d in_flight=%d failed_batches=%d",
            f">={s.backlog}" if s.backlog_at_least else s.backlog,
            "-" if s.oldest_unsent_age is None else f"{s.oldest_unsent_age:.1f}s",
            s.published,
            s.in_flight,
            s.failed_batches,
        )


async def _clean(args: argparse.Namespace, cleaner_type: Any) -> int:
    db = _require_db(args)
    cleaner = cleaner_type(
        db,
        retention=args.retention,
        batch_size=args.batch_size,
        interval=60.0 if args.every is None else args.every.total_seconds(),
        **_names(args),
    )
    try:
        if args.every is None:
            deleted = await cleaner.run_once()
            print(f"deleted {deleted} rows")
            return 0
        _install_stop(cleaner.stop)
        await cleaner.run()
        return 0
    finally:
        await cleaner.close()


def add_outbox_commands(commands: argparse._SubParsersAction[Any]) -> None:
    """``hexa-event outbox ...``"""
    group = commands.add_parser("outbox", help="transactional outbox: relay, cleaner, DDL")
    sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")

    _add_table_commands(
        sub,
        package="outbox",
        table="hexa_outbox",
        cleaner="OutboxCleaner",
        clean_help="delete sent rows older than the retention",
    )

    p = sub.add_parser("relay", help="publish unsent rows to a driver until stopped")
    _db_argument(p)
    _names_arguments(p)
    p.add_argument(
        "--to",
        default=os.environ.get("HEXA_EVENT_TO"),
        metavar="DRIVER_URL",
        help="where to publish, e.g. kafka://127.0.0.1:9092 (default: $HEXA_EVENT_TO)",
    )
    p.add_argument("--batch-size", type=_positive_int, default=1000)
    p.add_argument(
        "--concurrency", type=_positive_int, default=4, help="publish calls per batch (by key)"
    )
    p.add_argument("--pipeline", type=_positive_int, default=3, help="batches in flight")
    p.add_argument(
        "--claim-mode",
        choices=["lock", "lease"],
        default=None,
        help="lock (PostgreSQL default) or lease (SQLite; PgBouncer transaction pooling)",
    )
    p.add_argument(
        "--delete-sent", action="store_true", help="delete rows once sent instead of marking"
    )
    p.add_argument("--lease", type=_period, default=timedelta(seconds=30))
    p.add_argument("--retry-delay", type=parse_duration, default=timedelta(seconds=2))
    p.add_argument("--poll-interval", type=_period, default=timedelta(seconds=1))
    p.add_argument("--no-listen", action="store_true", help="poll only, no LISTEN/NOTIFY")
    p.add_argument("--once", action="store_true", help="send what is ready, then exit")
    p.add_argument(
        "--progress",
        type=parse_duration,
        default=timedelta(seconds=2),
        help="with --once: print rows relayed, rate and backlog this often (0 = never)",
    )
    p.add_argument(
        "--stats-every",
        type=parse_duration,
        default=timedelta(seconds=60),
        help="log backlog and oldest unsent age this often (0 = never)",
    )
    p.set_defaults(func=lambda a: asyncio.run(_relay(a)))


# -- inbox -----------------------------------------------------------------------------------


def add_inbox_commands(commands: argparse._SubParsersAction[Any]) -> None:
    """``hexa-event inbox ...``"""
    group = commands.add_parser("inbox", help="idempotent-consumer records: DDL, cleaner")
    sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")

    _add_table_commands(
        sub,
        package="inbox",
        table="hexa_inbox",
        cleaner="InboxCleaner",
        clean_help="delete dedup records older than the retention",
    )


# -- entry point -----------------------------------------------------------------------------


_DESCRIPTION = """\
Operate hexa-event from a shell: follow a channel (tail), publish one event (publish), list,
show, replay or purge dead letters (dlq), check a connection and its channels (doctor), run
the transactional outbox's relay and cleaner and see its backlog (outbox), manage the inbox
table (inbox). The driver URL (e.g. kafka://127.0.0.1:9092, sqlite:///app.db) is the first
argument or $HEXA_EVENT_URL; outbox and inbox commands take --db or $HEXA_EVENT_DB.
`hexa-event COMMAND --help` describes each; docs/cli.md has all of them."""


def build_parser() -> argparse.ArgumentParser:
    from .commands import EXIT_CODES, add_commands
    from .commands.helpformat import HelpFormatter, tidy

    parser = argparse.ArgumentParser(
        prog="hexa-event",
        description=_DESCRIPTION,
        epilog="exit status: "
        + ", ".join(f"{code} {what}" for code, what in EXIT_CODES.items())
        + ", 130 interrupted, 141 output closed",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("HEXA_EVENT_LOG_LEVEL") or "INFO",
        type=_log_level,
        choices=_LOG_LEVELS,
        help="how much the commands log to stderr",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_outbox_commands(commands)
    add_inbox_commands(commands)
    add_commands(commands)  # tail, publish, dlq, doctor, request, outbox status (alias stats)
    from .runner.command import add_run_command

    add_run_command(commands)  # run
    tidy(parser)
    return parser


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _log_level(text: str) -> str:
    """``debug`` as ``DEBUG``; anything else is bad usage, from ``$HEXA_EVENT_LOG_LEVEL`` too
    (argparse checks no default against the choices: ``logging`` raised ValueError)."""
    level = text.strip().upper()
    if level not in _LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"expected one of {', '.join(_LOG_LEVELS)} (--log-level or "
            f"$HEXA_EVENT_LOG_LEVEL), got {text!r}"
        )
    return level


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hexa-event")
    except PackageNotFoundError:  # run from a source tree that is not installed
        from . import __version__

        return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (also used as the console script)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    func: Command = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `hexa-event tail ... | head`: the reader has what it wanted
        with contextlib.suppress(OSError, ValueError):  # no "Exception ignored" at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a command killed by SIGPIPE (cat, grep)
    except UsageError as exc:
        print(f"hexa-event: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit:
        raise
    except ModuleNotFoundError as exc:
        from .errors import install_hint, missing_extra

        extra = missing_extra(exc)
        if extra is None:
            raise
        # `outbox status` without [sql]: name the extra to install, not a bare import error.
        print(
            f"hexa-event: error: this command needs {exc.name!r}: {install_hint(extra)}",
            file=sys.stderr,
        )
        return 2
    except Exception as exc:
        from .commands import printable
        from .errors import ConfigurationError, HexaEventError

        clean = _scrubber(args)
        text = str(exc).splitlines()[0] if str(exc) else ""
        kind = "" if isinstance(exc, HexaEventError) else f"{type(exc).__name__}: "
        # A broker's or a foreign producer's text may carry terminal escapes: shown, not run.
        print(f"hexa-event: error: {printable(kind + clean(text))}", file=sys.stderr)
        if log.isEnabledFor(logging.DEBUG):
            import traceback

            log.debug("details:\n%s", clean("".join(traceback.format_exception(exc))))
        return 2 if isinstance(exc, ConfigurationError) else 1  # a bad URL option is usage


def _scrubber(args: argparse.Namespace) -> Callable[[str], str]:
    """A function hiding, in a text, the secrets of every URL the command was given (the
    driver URL of the operator commands and ``$HEXA_EVENT_URL`` too, not only ``--db`` and
    ``--to``)."""
    from .redaction import scrub, url_secrets

    urls = [
        value
        for value in (
            getattr(args, "db", None),
            getattr(args, "to", None),
            getattr(args, "url", None),
            getattr(args, "url_option", None),
            os.environ.get("HEXA_EVENT_URL"),
        )
        if value and isinstance(value, str)
    ]
    secrets = [secret for url in urls for secret in url_secrets(url)]

    def clean(text: str) -> str:
        for url in urls:
            text = text.replace(url, _redact(url))
        return scrub(text, sorted(set(secrets), key=len, reverse=True))

    return clean


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
