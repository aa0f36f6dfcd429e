"""``hexa-event doctor URL``: can this service work against that broker? Said in plain words.

Connects, checks credentials and permissions as far as the engine lets a client see them,
lists the channels and consumer groups the given channels and actions would use, and says
what is wrong and how to fix it: unreachable, authentication refused, a missing topic while
provisioning is off, SQL tables not created. Read-only: it creates nothing.

Exit status: 0 nothing to fix, 3 unreachable or refused, 5 other problems.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..errors import install_hint
from ..redaction import redact_url as redact
from ..redaction import scrub
from ..redaction import url_secrets as secrets_of
from ..retry import dead_letter_channel, retry_channel
from ._common import (
    OK,
    PROBLEMS,
    UNREACHABLE,
    json_argument,
    print_json,
    url_argument,
)

_DEFAULT_PORTS = {"kafka": 9092, "pulsar": 6650, "nats": 4222, "stan": 4222, "postgresql": 5432}


@dataclass
class Check:
    name: str
    status: str
    """``ok``, ``warn`` (works, but look) or ``fail``."""
    detail: str
    fix: str = ""
    kind: str = ""
    """For failures: ``unreachable``, ``auth`` or ``config``."""


@dataclass
class Report:
    url: str
    engine: str
    checks: list[Check] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)

    def add(self, name: str, status: str, detail: str, fix: str = "", kind: str = "") -> None:
        self.checks.append(Check(name, status, detail, fix, kind))

    @property
    def exit_code(self) -> int:
        failures = [c for c in self.checks if c.status == "fail"]
        if any(c.kind in ("unreachable", "auth") for c in failures):
            return UNREACHABLE
        return PROBLEMS if failures else OK


def add(commands: Any) -> None:
    p = commands.add_parser(
        "doctor",
        help="check connectivity, credentials, channels and groups; say what is wrong",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    url_argument(p)
    p.add_argument(
        "--channel", action="append", default=[], help="a channel the service uses (repeatable)"
    )
    p.add_argument(
        "--action", action="append", default=[], help="a handler action it runs (repeatable)"
    )
    p.add_argument("--retries", type=int, default=4, help="retry channels per action (default 4)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per network check")
    json_argument(p)
    p.set_defaults(coro=run)


def planned(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The channels and groups the given channels and actions use."""
    channels = list(dict.fromkeys(args.channel))
    groups: list[str] = []
    for action in args.action:
        channels += [retry_channel(action, n) for n in range(1, args.retries + 1)]
        channels.append(dead_letter_channel(action))
        groups += [action, f"{action}.dlq-replay"]
    return channels, groups


async def tcp_check(report: Report, host: str, port: int, seconds: float) -> bool:
    try:
        async with asyncio.timeout(seconds):
            _, writer = await asyncio.open_connection(host, port)
        writer.close()
    except TimeoutError:
        report.add(
            f"reach {host}:{port}",
            "fail",
            f"no answer from {host}:{port} within {seconds:g}s",
            "check the host and port in the URL, and that no firewall drops the traffic",
            "unreachable",
        )
        return False
    except OSError as exc:
        report.add(
            f"reach {host}:{port}",
            "fail",
            f"cannot open a TCP connection to {host}:{port}: {exc.strerror or exc}",
            "start the broker, or fix the host and port in the URL (is a firewall or a "
            "wrong advertised listener in the way?)",
            "unreachable",
        )
        return False
    report.add(f"reach {host}:{port}", "ok", "TCP connection opened")
    return True


def _hosts(url: str, default_port: int) -> list[tuple[str, int]]:
    netloc = urlsplit(url).netloc.rsplit("@", 1)[-1]
    out = []
    for part in netloc.split(","):
        if not part:
            continue
        host, _, port = part.rpartition(":") if ":" in part else (part, "", "")
        out.append((host or "127.0.0.1", int(port) if port.isdigit() else default_port))
    return out or [("127.0.0.1", default_port)]


async def check_kafka(report: Report, url: str, seconds: float) -> None:
    from ..connect import connect

    try:
        options = connect(url).driver.options  # type: ignore[attr-defined]
        from confluent_kafka.admin import AdminClient
    except Exception as exc:
        missing = isinstance(exc, ImportError) or "extra" in str(exc)
        report.add(
            "kafka client",
            "fail",
            f"the Kafka driver cannot be loaded: {exc}",
            install_hint("kafka") if missing else "check the URL's options",
            "config",
        )
        return
    config = dict(options.admin())
    config.setdefault("socket.timeout.ms", int(seconds * 1000))
    admin = AdminClient(config)

    def metadata() -> Any:
        return admin.list_topics(timeout=seconds)

    try:
        meta = await asyncio.to_thread(metadata)
    except Exception as exc:
        text = str(exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else exc)
        auth = any(w in text.lower() for w in ("auth", "sasl", "ssl", "credential"))
        report.add(
            "kafka metadata",
            "fail",
            f"the broker did not answer a metadata request: {text}",
            "check sasl.username/sasl.password and security.protocol in the URL or options"
            if auth
            else "check the broker is up and its advertised listeners are reachable from here",
            "auth" if auth else "unreachable",
        )
        return
    report.add(
        "kafka metadata",
        "ok",
        f"{len(meta.brokers)} broker(s), {len(meta.topics)} topics visible",
    )
    for channel in report.channels:
        topic = meta.topics.get(channel)
        if topic is not None and topic.error is not None:
            report.add(
                f"topic {channel}",
                "fail",
                f"not allowed to read it: {topic.error.str()}",
                f"grant this principal DESCRIBE/READ/WRITE on topic {channel}",
                "auth",
            )
        elif topic is None and options.provision:
            report.add(
                f"topic {channel}",
                "ok",
                "missing; will be created on first use (provision is on)",
            )
        elif topic is None:
            report.add(
                f"topic {channel}",
                "fail",
                "missing and provisioning is off: emits and subscriptions to it will fail",
                f"create topic {channel} (kafka-topics.sh --create --topic {channel}), or "
                "connect with provision=True",
                "config",
            )
        else:
            report.add(f"topic {channel}", "ok", f"{len(topic.partitions)} partitions")
    if report.groups:
        try:
            listed = await asyncio.to_thread(
                lambda: admin.list_consumer_groups(request_timeout=seconds).result()
            )
            existing = {g.group_id for g in listed.valid}
        except Exception as exc:
            report.add(
                "consumer groups",
                "warn",
                f"cannot list consumer groups: {exc}",
                "grant DESCRIBE on the groups to see their state",
            )
            return
        for group in report.groups:
            state = "exists" if group in existing else "new (starts at the earliest record)"
            report.add(f"group {group}", "ok", state)


async def check_pulsar(report: Report, url: str, seconds: float) -> None:
    """Broker port, admin API and namespace, then each channel's topic and each group's
    subscription, through the admin API (read-only)."""
    try:
        from ..drivers.pulsar import PulsarAdmin, PulsarOptions

        options = PulsarOptions.from_url(url)
    except Exception as exc:
        missing = isinstance(exc, ImportError)
        report.add(
            "pulsar client",
            "fail",
            f"the Pulsar driver cannot be loaded: {exc}",
            install_hint("pulsar") if missing else "check the URL's options",
            "config",
        )
        return
    admin = PulsarAdmin(options)
    where = f"{options.tenant}/{options.namespace}"
    try:
        status = await asyncio.to_thread(admin.namespace_status_sync)
    except Exception as exc:
        report.add(
            "pulsar admin API",
            "fail",
            str(exc),
            "give the admin API's address with ?admin_url=http://host:8080 (it creates topics)",
            "unreachable",
        )
        return
    if status in (401, 403):
        report.add(
            "pulsar admin API",
            "fail",
            f"refused reading namespace {where} (HTTP {status})",
            "pass a token with admin rights on the namespace (pulsar://TOKEN@host:6650)",
            "auth",
        )
        return
    if status != 200:
        report.add(
            "pulsar admin API",
            "fail",
            f"namespace {where} not readable (HTTP {status})",
            f"create it (pulsar-admin namespaces create {where}), or pass tenant= namespace=",
            "config",
        )
        return
    report.add("pulsar admin API", "ok", f"namespace {where} exists")
    existing: dict[str, list[str]] = {}
    for channel in report.channels:
        try:
            partitions = await asyncio.to_thread(admin.partitions_sync, channel)
        except Exception as exc:
            report.add(f"topic {channel}", "warn", f"cannot read it: {exc}")
            continue
        if partitions is None and options.provision:
            report.add(
                f"topic {channel}", "ok", "missing; will be created on first use (provision)"
            )
        elif partitions is None:
            report.add(
                f"topic {channel}",
                "fail",
                "missing and provisioning is off: emits and subscriptions to it will fail",
                f"create topic {options.topic(channel)} (pulsar-admin topics create), or "
                "connect with provision=True",
                "config",
            )
        else:
            shape = f"{partitions} partitions" if partitions else "non-partitioned"
            report.add(f"topic {channel}", "ok", shape)
            existing[channel] = await asyncio.to_thread(admin.subscriptions_sync, channel)
    for group in report.groups:
        on = [c for c, subs in existing.items() if group in subs]
        state = f"exists on {', '.join(on)}" if on else "new (starts at the earliest record)"
        report.add(f"subscription {group}", "ok", state)


def sql_tables(dialect: str, schema: str | None = None, table_prefix: str = "") -> list[Any]:
    """The SQL driver's tables (``Table`` objects) in ``schema`` with ``table_prefix``."""
    from ..drivers.sql import metadata

    return list(metadata(dialect, schema=schema, table_prefix=table_prefix).tables.values())


async def check_sql(report: Report, url: str) -> None:
    """Connect, and check the driver's tables (of the URL's ``?schema=``/``?table_prefix=``
    set) exist and can be read; note the outbox and inbox tables of the same set."""
    from sqlalchemy import inspect, text

    from .._sql.names import url_and_names
    from ..errors import ConfigurationError
    from .status import async_engine

    try:
        url, schema, prefix = url_and_names(url, None, None, owner="the URL query")
        dialect = "sqlite" if urlsplit(url).scheme.startswith("sqlite") else "postgresql"
        wanted = sql_tables(dialect, schema, prefix)
    except ConfigurationError as exc:
        report.add("table names", "fail", str(exc), "fix ?schema= or ?table_prefix=", "config")
        return
    where = f" (schema {schema})" if schema else ""
    parts = urlsplit(url)
    if parts.scheme.startswith("sqlite"):
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        exists = await asyncio.to_thread(os.path.exists, path) if path else True
        if path and path != ":memory:" and not exists:
            report.add(
                "database file",
                "warn",
                f"{path} does not exist yet; the driver will create it",
                "check the path if you expected existing events (sqlite:///relative.db, "
                "sqlite:////absolute.db)",
            )
            return
    try:
        engine = async_engine(url)
    except Exception as exc:
        report.add("database URL", "fail", str(exc), "fix the database URL", "config")
        return
    try:
        async with engine.connect() as conn:

            def names(sync_conn: Any) -> set[str]:
                inspector = inspect(sync_conn)
                if schema is not None and schema not in inspector.get_schema_names():
                    return set()
                return set(inspector.get_table_names(schema=schema))

            tables = set(await conn.run_sync(names))
            quote = conn.dialect.identifier_preparer.format_table
            report.add("connect", "ok", f"connected to {redact(url)}")
            missing = [t.name for t in wanted if t.name not in tables]
            if missing:
                report.add(
                    "schema",
                    "warn",
                    f"schema not migrated: missing tables {', '.join(missing)}{where}",
                    "let the driver create them on first use (create_tables=True, the "
                    "default; needs CREATE rights) or run hexa_event.drivers.sql.migrate(URL)",
                )
            else:
                report.add("schema", "ok", f"the SQL driver's tables exist{where}")
                for table in wanted:
                    await conn.execute(text(f"SELECT 1 FROM {quote(table)} LIMIT 1"))
                report.add("permissions", "ok", "can read the log and the group positions")
                channels_table = next(t for t in wanted if t.name.endswith("channels"))
                rows = await conn.execute(text(f"SELECT channel FROM {quote(channels_table)}"))
                known = {row[0] for row in rows}
                for channel in report.channels:
                    state = "has records" if channel in known else "no records yet"
                    report.add(f"channel {channel}", "ok", state)
            for optional in (f"{prefix}hexa_outbox", f"{prefix}hexa_inbox"):
                if optional in tables:
                    report.add(optional, "ok", f"present{where}")
    except Exception as exc:
        text_ = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        text_ = text_.replace(url, redact(url))
        lowered = text_.lower()
        if "password" in lowered or "authentication" in lowered or "role" in lowered:
            report.add(
                "connect",
                "fail",
                f"the database refused the credentials: {text_}",
                "fix the user and password (give them in HEXA_EVENT_URL, not on the command line)",
                "auth",
            )
        elif "does not exist" in lowered and "database" in lowered:
            report.add(
                "database",
                "fail",
                text_,
                "create the database (CREATE DATABASE ...) or fix its name in the URL",
                "config",
            )
        elif "permission denied" in lowered:
            report.add(
                "permissions",
                "fail",
                text_,
                "grant SELECT, INSERT, UPDATE, DELETE on the hexa_* tables to this user",
                "auth",
            )
        else:
            report.add(
                "connect",
                "fail",
                f"cannot reach the database: {text_}",
                "start the database or fix host, port and database name in the URL",
                "unreachable",
            )
    finally:
        await engine.dispose()


async def driver_check(report: Report, url: str, seconds: float) -> bool:
    """Build the driver from the URL as ``connect()`` does and run its own check
    (:meth:`~hexa_event.driver.Driver.check`): what it refuses, the service would too."""
    from ..connect import connect
    from ..errors import ChannelNotFoundError, ConfigurationError, DriverError

    try:
        connection = connect(url)
    except ConfigurationError as exc:
        missing = "pip install" in str(exc)
        report.add(
            "driver",
            "fail",
            f"the driver refuses this URL: {exc}",
            "install the driver's extra"
            if missing
            else "fix the URL's options as the message says",
            "config",
        )
        return False
    except Exception as exc:
        report.add(
            "driver", "fail", f"the driver refuses this URL: {exc!r}", "fix the URL", "config"
        )
        return False
    try:
        async with asyncio.timeout(seconds * 3 + 5):
            seen = await connection.check(seconds)
    except (ConfigurationError, ChannelNotFoundError) as exc:
        report.add("driver", "fail", str(exc), "do what the message says", "config")
        return False
    except DriverError as exc:
        text = str(exc)
        auth = any(w in text.lower() for w in ("auth", "sasl", "credential", "permission"))
        report.add(
            "driver",
            "fail",
            text,
            "fix the credentials" if auth else "do what the message says",
            "auth" if auth else "unreachable",
        )
        return False
    except TimeoutError:
        report.add(
            "driver",
            "fail",
            f"the driver did not finish connecting within {seconds * 3 + 5:g}s",
            "check the address and that it is the right kind of broker",
            "unreachable",
        )
        return False
    except Exception as exc:
        report.add("driver", "fail", f"{type(exc).__name__}: {exc}", "see the message", "config")
        return False
    finally:
        with contextlib.suppress(Exception):
            await connection.close()
    report.add("driver", "ok", seen)
    return True


async def diagnose(args: argparse.Namespace, url: str) -> Report:
    report = await _diagnose(args, url)
    secrets = secrets_of(url)
    for check in report.checks:
        check.detail = scrub(check.detail, secrets)
        check.fix = scrub(check.fix, secrets)
    return report


async def _diagnose(args: argparse.Namespace, url: str) -> Report:
    scheme = urlsplit(url).scheme.lower().split("+", 1)[0]
    engine = {"postgres": "postgresql"}.get(scheme, scheme)
    report = Report(url=redact(url), engine=engine)
    report.channels, report.groups = planned(args)
    from ..connect import known_schemes

    if engine not in known_schemes():
        report.add(
            "driver",
            "fail",
            f"unknown URL scheme {scheme!r}",
            f"use one of {', '.join(known_schemes())}",
            "config",
        )
        return report
    if engine == "memory":
        report.add(
            "driver",
            "ok",
            "the in-process memory broker: nothing to reach; events live only in one process",
        )
        return report
    if engine in ("kafka", "pulsar", "nats", "stan", "postgresql"):
        hosts = _hosts(url, _DEFAULT_PORTS[engine])
        reached = [await tcp_check(report, host, port, args.timeout) for host, port in hosts]
        # Kafka needs one bootstrap server; the others every address they are given.
        if not (any(reached) if engine == "kafka" else all(reached)):
            return report
    if engine == "postgresql":
        # The database's own answers (no such database, refused credentials) first.
        await check_sql(report, url)
        if report.exit_code == OK:
            await driver_check(report, url, args.timeout)
        return report
    if not await driver_check(report, url, args.timeout):
        return report
    if engine == "kafka":
        await check_kafka(report, url, args.timeout)
    elif engine == "pulsar":
        await check_pulsar(report, url, args.timeout)
    elif engine == "sqlite":
        await check_sql(report, url)
    else:
        report.add(
            "permissions",
            "warn",
            f"not checked for {engine}: the first emit or subscription will tell",
        )
    return report


def render(report: Report) -> str:
    marks = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}
    lines = [f"hexa-event doctor: {report.url} ({report.engine})", ""]
    for check in report.checks:
        lines.append(f"  [{marks[check.status]}] {check.name}: {check.detail}")
        if check.fix and check.status != "ok":
            lines.append(f"         fix: {check.fix}")
    if report.channels or report.groups:
        lines.append("")
        lines.append(f"  channels it would use: {', '.join(report.channels) or '-'}")
        lines.append(f"  consumer groups:       {', '.join(report.groups) or '-'}")
    failures = sum(1 for c in report.checks if c.status == "fail")
    lines.append("")
    lines.append(
        "diagnosis: nothing to fix"
        if not failures
        else f"diagnosis: {failures} problem(s) to fix, see FAIL above"
    )
    return "\n".join(lines) + "\n"


async def run(args: argparse.Namespace) -> int:
    from ._common import require_url

    url = require_url(args)
    report = await diagnose(args, url)
    if args.json:
        print_json({**asdict(report), "exit_code": report.exit_code})
    else:
        sys.stdout.write(render(report))
    return report.exit_code
