"""``hexa-event request URL CHANNEL --key K --data JSON``: send a request, print the reply.

The event carries a reply channel of this command's own; a handler answers with
``emitter.reply(ctx, msg, payload)`` (or, in Go, by emitting to ``ReplyChannel``). Prints the
reply's payload (JSON, or the raw bytes with ``--codec raw``); ``--json`` prints the reply's
id, channel, key, correlation id and payload as one JSON object. Exits 1 when no reply came
within ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ._common import (
    FAILED,
    OK,
    CommandError,
    json_argument,
    print_json,
    printable,
    require_url,
    safe_json,
    seconds,
)
from .publish import bad_event, build, event_arguments


def add(commands: Any) -> None:
    p = commands.add_parser(
        "request",
        help="send a request event and print the reply",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    event_arguments(p)
    p.add_argument(
        "--timeout",
        type=_timeout,
        default=30.0,
        help="seconds to wait for the reply (default 30, at most a day)",
    )
    json_argument(p)
    p.set_defaults(coro=run)


_DAY = 24 * 3600.0


def _timeout(text: str) -> float:
    """An argparse type: ``--timeout``, above 0 and at most a day (as ``request`` takes)."""
    value = seconds(text)
    if value > _DAY:
        raise argparse.ArgumentTypeError(f"expected at most {_DAY:g} seconds, got {text!r}")
    return value


async def run(args: argparse.Namespace) -> int:
    from ..connect import connect
    from ..errors import InvalidEventError, RequestTimeoutError
    from ..propagation import CORRELATION_ID

    event, ctx = build(args)
    conn = connect(require_url(args))
    try:
        reply = await conn.emitter().request(event, ctx, timeout=args.timeout)
    except RequestTimeoutError as exc:
        raise CommandError(str(exc), FAILED) from None
    except InvalidEventError as exc:
        raise bad_event(exc) from None
    finally:
        await conn.close()
    payload = reply.payload
    if args.json:
        correlation = reply.headers.get(CORRELATION_ID, b"").decode("utf-8", "replace")
        print_json(
            {
                "id": reply.id,
                "channel": reply.channel,
                "key": reply.key,
                "correlation_id": correlation,
                "payload": payload.decode("utf-8", "replace")
                if isinstance(payload, bytes)
                else payload,
            }
        )
    elif isinstance(payload, bytes) and not sys.stdout.isatty():
        sys.stdout.buffer.write(payload)
        sys.stdout.flush()
    elif isinstance(payload, bytes):  # to a terminal: its escapes shown, not acted on
        print(printable(payload.decode("utf-8", "replace"), lines=True))
    else:
        print(safe_json(json.dumps(payload, indent=2, ensure_ascii=False, default=str)))
    return OK
