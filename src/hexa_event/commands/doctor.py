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
import sys
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal
from urllib.parse import urlsplit

from ..driver import Finding
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
    printable,
    seconds,
    url_argument,
)

_DEFAULT_PORTS = {"kafka": 9092, "pulsar": 6650, "nats": 4222, "stan": 4222, "postgresql": 5432}


@dataclass
class Report:
    url: str
    engine: str
    checks: list[Finding] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)

    def add(
        self,
        name: str,
        status: Literal["ok", "warn", "fail"],
        detail: str,
        fix: str = "",
        kind: str = "",
    ) -> None:
        self.checks.append(Finding(name, status, detail, fix, kind))

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
    p.add_argument(
        "--group",
        action="append",
        default=[],
        help="a consumer group named otherwise than its action (a Kafka group id, a "
        "JetStream durable, a Pulsar subscription, given in the subscription's options; "
        "repeatable)",
    )
    p.add_argument(
        "--retries", type=_retries, default=4, help="retry channels per action (default 4)"
    )
    p.add_argument("--timeout", type=seconds, default=5.0, help="seconds per network check")
    json_argument(p)
    p.set_defaults(coro=run)


def _retries(text: str) -> int:
    """0 to 1000, as ``RetryPolicy.max_retries`` (a billion would list a billion channels)."""
    try:
        value = int(text) if len(text) <= 5 else -1
    except ValueError:
        value = -1
    if not 0 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to 1000, got {text!r}")
    return value


def planned(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The channels and groups the given channels, actions and groups use."""
    channels = list(dict.fromkeys(args.channel))
    groups: list[str] = []
    for action in args.action:
        channels += [retry_channel(action, n) for n in range(1, args.retries + 1)]
        channels.append(dead_letter_channel(action))
        groups += [action, f"{action}.dlq-replay"]
    groups += args.group
    return channels, list(dict.fromkeys(groups))


async def tcp_check(report: Report, host: str, port: int, seconds: float) -> bool:
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        async with asyncio.timeout(seconds):
            _, writer = await asyncio.open_connection(host, port)
        writer.close()
    except TimeoutError:
        report.add(
            f"reach {where}",
            "fail",
            f"no answer from {where} within {seconds:g}s",
            "check the host and port in the URL, and that no firewall drops the traffic",
            "unreachable",
        )
        return False
    except (OverflowError, ValueError) as exc:  # a port past 65535, a host IDNA refuses
        report.add(
            f"reach {where}",
            "fail",
            f"cannot open a TCP connection to {where}: {exc}",
            "fix the host and port in the URL (a port is a number from 1 to 65535)",
            "config",
        )
        return False
    except OSError as exc:
        report.add(
            f"reach {where}",
            "fail",
            f"cannot open a TCP connection to {where}: {exc.strerror or exc}",
            "start the broker, or fix the host and port in the URL (is a firewall or a "
            "wrong advertised listener in the way?)",
            "unreachable",
        )
        return False
    report.add(f"reach {where}", "ok", "TCP connection opened")
    return True


def _hosts(url: str, default_port: int) -> list[tuple[str, int]]:
    netloc = urlsplit(url).netloc.rsplit("@", 1)[-1]
    out = []
    for part in netloc.split(","):
        if not part:
            continue
        if part.startswith("["):  # an IPv6 address: [::1]:9092
            host, _, rest = part[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            host, _, port = part.rpartition(":") if ":" in part else (part, "", "")
        number = port.isascii() and port.isdigit() and len(port) <= 5
        out.append((host or "127.0.0.1", int(port) if number else default_port))
    return out or [("127.0.0.1", default_port)]


async def driver_check(report: Report, url: str, seconds: float) -> bool:
    """Build the driver from the URL as ``connect()`` does and run its diagnosis
    (:meth:`~hexa_event.driver.Driver.diagnose`: its own check, then what the engine tells
    of the channels and groups): what it refuses, the service would too."""
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
        async with asyncio.timeout(seconds * 6 + 5):
            found = await connection.diagnose(report.channels, report.groups, seconds)
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
            f"the driver did not finish connecting within {seconds * 6 + 5:g}s",
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
    report.checks += found
    return True


async def diagnose(args: argparse.Namespace, url: str) -> Report:
    report = await _diagnose(args, url)
    secrets = secrets_of(url)
    report.checks = [
        replace(c, detail=scrub(c.detail, secrets), fix=scrub(c.fix, secrets))
        for c in report.checks
    ]
    return report


async def _diagnose(args: argparse.Namespace, url: str) -> Report:
    scheme = url.split("://", 1)[0].lower().split("+", 1)[0]
    engine = {"postgres": "postgresql"}.get(scheme, scheme)
    report = Report(url=redact(url), engine=engine)
    report.channels, report.groups = planned(args)
    try:
        urlsplit(url)
    except ValueError as exc:  # "Invalid IPv6 URL": every later step would raise it too
        report.add(
            "URL",
            "fail",
            f"the URL cannot be read: {exc}",
            "fix the host part: an IPv6 address goes in brackets, e.g. [::1]:9092",
            "config",
        )
        return report
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
    if engine in _DEFAULT_PORTS:
        hosts = _hosts(redact(url), _DEFAULT_PORTS[engine])  # the host after any password
        reached = [await tcp_check(report, host, port, args.timeout) for host, port in hosts]
        # Kafka needs one bootstrap server; the others every address they are given.
        if not (any(reached) if engine == "kafka" else all(reached)):
            return report
    await driver_check(report, url, args.timeout)
    report.checks = [_dead_letters_wait(check, args.action) for check in report.checks]
    return report


def _dead_letters_wait(check: Finding, actions: list[str]) -> Finding:
    """``check`` with the fix for dead letters when it warns that nothing consumes an
    ``<action>.dlq-replay`` group: that group reads them on demand (``hexa-event dlq``), so
    starting a receiver, the drivers' fix, would not help."""
    if check.status != "warn" or not check.detail.endswith(": nothing consumes it"):
        return check
    for action in actions:
        if check.name.endswith(f" {action}.dlq-replay"):
            fix = f"dead letters wait: look at them (hexa-event dlq list --action {action}), "
            return replace(check, fix=fix + "then replay or purge them (hexa-event dlq replay)")
    return check


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
    warnings = sum(1 for c in report.checks if c.status == "warn")
    lines.append("")
    if failures:
        lines.append(f"diagnosis: {failures} problem(s) to fix, see FAIL above")
    elif warnings:  # it can work; what a warning names may still need someone
        lines.append(f"diagnosis: it can work; {warnings} warning(s) to look at, see warn above")
    else:
        lines.append("diagnosis: nothing to fix")
    return "\n".join(printable(line) for line in lines) + "\n"


async def run(args: argparse.Namespace) -> int:
    from ._common import require_url

    url = require_url(args)
    report = await diagnose(args, url)
    if args.json:
        print_json({**asdict(report), "exit_code": report.exit_code})
    else:
        sys.stdout.write(render(report))
    return report.exit_code
