"""``hexa-event tail URL CHANNEL``: follow a channel without joining a working group.

Reads as a throwaway group ``hexa-event-tail-<random>`` (from the latest record, or from the
beginning with ``--from-beginning``), so no service's group loses or shares an event. Each
record printed is acked to that throwaway group only, and the group is ephemeral: on exit
the driver deletes what the broker kept for it (Kafka's group offsets, Pulsar's
subscription, a STAN durable, a JetStream consumer, SQL positions), so a tail leaves no
backlog retained behind it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from ..driver import Delivery, Subscription
from ..errors import ChannelNotFoundError
from ._common import (
    NOT_FOUND,
    OK,
    CommandError,
    count,
    json_argument,
    print_json,
    printable,
    require_existing_sqlite,
    require_url,
    safe_json,
    seconds,
    url_argument,
)
from ._records import connect_reading, describe, load_type, open_subscription


def add(commands: Any) -> None:
    p = commands.add_parser(
        "tail",
        help="follow a channel, printing each event (no working group joined)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    url_argument(p)
    p.add_argument("channel", metavar="CHANNEL")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest record kept")
    p.add_argument(
        "--type",
        metavar="MODULE:CLASS",
        help="protobuf message class for protobuf payloads (printed as protojson)",
    )
    p.add_argument("-n", "--count", type=count, default=None, help="stop after N events")
    p.add_argument("--idle", type=seconds, default=None, help="stop after this many quiet seconds")
    json_argument(p)
    p.set_defaults(coro=run)


def render(event: dict[str, Any]) -> str:
    """The human form of one event; what its producer wrote is escaped (:func:`printable`)."""
    ctx = event["context"]
    title = f"── {event['channel']}  key={event['key']}  id={event['id']}  {event['time']}"
    details = [f"correlation_id={ctx.get('correlation_id', '')}"]
    if "user" in ctx:
        details.append(f"user={ctx['user']['id']} ({ctx['user']['type']})")
    if "locale" in ctx:
        details.append(f"locale={ctx['locale']}")
    if "traceparent" in ctx:
        details.append(f"traceparent={ctx['traceparent']}")
    if "error" in ctx:
        details.append(f"context error: {ctx['error']}")
    lines = [printable(title), "   " + printable("  ".join(details))]
    body = event["body"]
    if event["decoded_as"] in ("json", "protojson"):
        text = safe_json(json.dumps(body, indent=2, ensure_ascii=False))
    else:
        text = printable(f"({event['codec']}, {event['decoded_as']}) {body}", lines=True)
    lines += ["   " + line for line in text.splitlines()]
    return "\n".join(lines) + "\n"


def _stop_on_signals(stop: asyncio.Event) -> tuple[Callable[[], int | None], Callable[[], None]]:
    """The first SIGTERM or SIGINT sets ``stop``: the tail finishes the batch in hand (a
    settlement is never cut short), then closes and deletes its throwaway group (a tail
    stopped by ``kill`` or Kubernetes must not leave a group that pins the log). A second
    signal cancels it outright. Returns (the exit status if signalled: 0 for SIGTERM, 130
    for Ctrl-C; undo)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    signalled: list[int] = []

    def on_signal(sig: int) -> None:
        signalled.append(sig)
        if len(signalled) == 1:
            stop.set()
        elif task is not None:
            task.cancel()

    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)

    def undo() -> None:
        for sig in installed:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)

    def status() -> int | None:
        if not signalled:
            return None
        return 130 if signalled[0] == signal.SIGINT else OK

    return status, undo


async def run(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    signalled, undo = _stop_on_signals(stop)
    try:
        code = await _tail(args, stop)
    except asyncio.CancelledError:
        if signalled() is None:
            raise
        code = OK  # the finally blocks of _tail closed the subscription and the driver
    finally:
        undo()
    status = signalled()
    return code if status is None else status


async def _next_batch(
    subscription: Subscription, room: int, idle: float | None, stop: asyncio.Event
) -> Sequence[Delivery]:
    """The next deliveries; none once ``idle`` seconds pass without any, or on ``stop``."""
    fetching = asyncio.ensure_future(subscription.fetch(room))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((fetching, stopping), timeout=idle, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        fetching.cancel()  # no-op when it finished
    if fetching.done() and not fetching.cancelled():
        return fetching.result()
    with contextlib.suppress(asyncio.CancelledError):
        await fetching  # a fetch is cancel-safe: what it had not handed out stays unacked
    return ()


async def _tail(args: argparse.Namespace, stop: asyncio.Event) -> int:
    payload_type = load_type(args.type)
    url = require_url(args)
    driver = await connect_reading(url)  # checks the URL and its table names; creates nothing
    group = f"hexa-event-tail-{uuid.uuid4().hex[:12]}"
    shown = 0
    try:
        require_existing_sqlite(url)
        try:
            subscription = await open_subscription(
                driver,
                group,
                [args.channel],
                "earliest" if args.from_beginning else "latest",
                prefetch=500,
                ephemeral=True,
            )
        except ChannelNotFoundError:
            raise CommandError(
                f"channel {args.channel!r} does not exist (tail creates no channel): check "
                "its name; `hexa-event doctor URL --channel NAME` shows what is there",
                NOT_FOUND,
            ) from None
        print(
            f"following {args.channel} as throwaway group {group} "
            f"({'from the beginning' if args.from_beginning else 'new events only'}); "
            "Ctrl-C stops",
            file=sys.stderr,
            flush=True,
        )
        try:
            while not stop.is_set() and (args.count is None or shown < args.count):
                room = 100 if args.count is None else min(100, args.count - shown)
                deliveries = await _next_batch(subscription, room, args.idle, stop)
                if not deliveries:
                    break
                for delivery in deliveries:
                    event = describe(delivery, payload_type)
                    if args.json:
                        print_json(event)
                    else:
                        sys.stdout.write(render(event))
                    sys.stdout.flush()
                    delivery.ack()
                    shown += 1
                await subscription.settle(deliveries)
        finally:
            await asyncio.shield(subscription.close())
    finally:
        await asyncio.shield(driver.close())
    return OK
