"""``hexa-event publish URL CHANNEL --key K --data JSON|@file``: emit one event.

The event goes through the same emitter as a service's (codec, context headers, event id),
so consumers cannot tell it from one a service emitted. Prints the event id.
``--delay SECONDS`` or ``--deliver-at 2026-12-24T09:00:00+01:00`` schedules it: no handler
runs it before then.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ._common import OK, USAGE, CommandError, json_argument, print_json, require_url, url_argument


def add(commands: Any) -> None:
    p = commands.add_parser(
        "publish",
        help="emit one event (JSON or raw bytes) with a context, now or scheduled",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    event_arguments(p)
    p.add_argument("--reply-channel", default="")
    when = p.add_mutually_exclusive_group()
    when.add_argument(
        "--delay", type=float, default=None, metavar="SECONDS", help="deliver after this delay"
    )
    when.add_argument(
        "--deliver-at",
        default=None,
        metavar="ISO-8601",
        help="deliver at this time, with its zone (2026-12-24T09:00:00+01:00, or Z for UTC)",
    )
    json_argument(p)
    p.set_defaults(coro=run)


def event_arguments(p: argparse.ArgumentParser) -> None:
    """The URL, channel, key, payload and context arguments (``publish`` and ``request``)."""
    url_argument(p)
    p.add_argument("channel", metavar="CHANNEL")
    p.add_argument("--key", required=True, help="the event key (orders events of one key)")
    p.add_argument(
        "--data",
        required=True,
        metavar="JSON|@FILE|-",
        help="the payload: JSON text, @path to read a file, or - for standard input",
    )
    p.add_argument(
        "--codec",
        default="json",
        choices=["json", "raw"],
        help="json (default) or raw bytes of the data as given",
    )
    p.add_argument("--id", default=None, help="event id (default: a new UUIDv7)")
    p.add_argument("--correlation-id", default=None)
    p.add_argument("--locale", default="")
    user = p.add_mutually_exclusive_group()  # one user: the other was silently dropped
    user.add_argument("--user-id", default=None, help="a regular user with this id")
    user.add_argument("--service-user", default=None, help="a service user with this id")
    p.add_argument(
        "--traceparent",
        type=traceparent,
        default="",
        help="W3C traceparent to continue: 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>",
    )
    p.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an application header (repeatable)",
    )


_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")


def traceparent(text: str) -> str:
    """An argparse type: a W3C ``traceparent`` (version-traceid-parentid-flags in hex,
    neither id all zeros, version not ff), written in lower case. Consumers drop any other
    silently: the trace did not continue and nothing said why."""
    if not text:
        return ""  # the default: no trace to continue
    found = _TRACEPARENT.fullmatch(text.strip().lower())
    if found is None or found[1] == "ff" or not found[2].strip("0") or not found[3].strip("0"):
        raise argparse.ArgumentTypeError(
            "expected a W3C traceparent, 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>, "
            "neither id all zeros (e.g. "
            f"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01), got {text!r}"
        )
    return found[0]


def read_data(spec: str) -> bytes:
    if spec == "-":
        return sys.stdin.buffer.read()
    if spec.startswith("@"):
        path = Path(spec[1:])
        try:
            return path.read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read --data file {path}: {exc.strerror}", USAGE) from None
    return spec.encode("utf-8", "surrogateescape")  # bytes that are not UTF-8: as given


def _not_json(name: str) -> float:
    raise ValueError(f"{name} is not JSON: send a number, a string or null")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is beyond a float: send it as a string")
    return value


def _check_text(args: argparse.Namespace) -> None:
    """Refuse a text option holding bytes that are not UTF-8 (Python hands them over as lone
    surrogates, which no header or key can carry): bad usage naming the option, not a
    UnicodeEncodeError once the event is half built."""
    options = [
        ("CHANNEL", args.channel),
        ("--key", args.key),
        ("--id", args.id),
        ("--correlation-id", args.correlation_id),
        ("--locale", args.locale),
        ("--user-id", args.user_id),
        ("--service-user", args.service_user),
        ("--traceparent", args.traceparent),
        ("--reply-channel", getattr(args, "reply_channel", None)),
        ("--deliver-at", getattr(args, "deliver_at", None)),
        *(("--header", header) for header in args.header),
    ]
    for option, value in options:
        if not value or value.isascii():
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise CommandError(
                f"{option} {value!r} is not UTF-8 text (the shell passed bytes in another "
                "encoding): give it in UTF-8 (check the terminal's encoding, or LANG)",
                USAGE,
            ) from None


def deliver_at(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise CommandError(
            f"--deliver-at {text!r} is not an ISO-8601 time: write it as "
            "2026-12-24T09:00:00+01:00 (or ...Z for UTC)",
            USAGE,
        ) from None


def build(args: argparse.Namespace) -> tuple[Any, Any]:
    from ..context import Context, User, UserType
    from ..errors import InvalidEventError
    from ..event import Event

    _check_text(args)
    raw = read_data(args.data)
    payload: Any
    if args.codec == "json":
        try:
            payload = json.loads(raw, parse_constant=_not_json, parse_float=_finite)
        except RecursionError:
            raise CommandError(
                "--data is nested too deep to read; flatten it, or use --codec raw", USAGE
            ) from None
        except ValueError as exc:
            raise CommandError(
                f"--data is not JSON ({exc}); quote it for the shell, e.g. "
                "--data '{\"total\": 10}', or use --codec raw",
                USAGE,
            ) from None
    else:
        payload = raw
    headers: dict[str, str] = {}
    for item in args.header:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CommandError(f"--header must be NAME=VALUE, got {item!r}", USAGE)
        headers[name] = value
    user = None
    if args.user_id:
        user = User(id=args.user_id)
    elif args.service_user:
        user = User(id=args.service_user, type=UserType.SERVICE)
    fields: dict[str, Any] = {"locale": args.locale, "user": user}
    if args.correlation_id:
        fields["correlation_id"] = args.correlation_id
    if args.traceparent:
        fields["traceparent"] = args.traceparent
    try:
        event = Event(
            args.channel,
            args.key,
            payload,
            reply_channel=getattr(args, "reply_channel", ""),
            headers=headers,
            id=args.id,
            codec=args.codec,
            deliver_at=deliver_at(getattr(args, "deliver_at", None)),
            delay=getattr(args, "delay", None),
        )
    except InvalidEventError as exc:
        raise bad_event(exc) from None
    return event, Context(**fields)


_OPTIONS = {
    "channel": "CHANNEL",
    "key": "--key",
    "id": "--id",
    "headers": "--header",
    "reply_channel": "--reply-channel",
    "deliver_at": "--deliver-at",
    "delay": "--delay",
    "payload": "--data",
}


def bad_event(exc: Any) -> CommandError:
    """An :class:`~hexa_event.errors.InvalidEventError` as bad usage naming the option."""
    return CommandError(f"{_OPTIONS.get(exc.field, exc.field)}: {exc}", USAGE)


async def run(args: argparse.Namespace) -> int:
    from ..connect import connect

    event, ctx = build(args)
    from ..errors import InvalidEventError

    conn = connect(require_url(args))
    try:
        event_id = await conn.emitter().emit(event, ctx)
    except InvalidEventError as exc:  # a reserved --header name, found as it is encoded
        raise bad_event(exc) from None
    finally:
        await conn.close()
    if args.json:
        print_json(
            {
                "id": event_id,
                "channel": event.channel,
                "key": event.key,
                "correlation_id": ctx.correlation_id,
            }
        )
    else:
        due = event.due(time.time())
        when = (
            f", deliver at {datetime.fromtimestamp(due, UTC).isoformat(timespec='seconds')}"
            if due
            else ""
        )
        print(f"published {event_id} to {event.channel} (key {event.key}{when})")
    return OK
