"""``hexa-event dlq list|show|replay|purge URL --action A``: act on an action's dead letters.

Pending dead letters are those of ``<action>.dlq`` not yet replayed or purged: the group
``<action>.dlq-replay`` keeps that position (the same group as ``replay_dead_letters``).

- ``list`` and ``show`` read the pending letters as that group and settle none of them (they
  stay pending; while listing, a replay running elsewhere is paused by the group rebalance).
- ``replay`` republishes letters to the channel they came from (or ``--to``), keeping the
  event id (an inbox recognises it) and marking the copy ``HEXA_REPLAYED_FROM``; a replayed
  letter is no longer pending. ``--id``, ``--reason``, ``--error-type`` and ``--key`` choose
  letters; the others stay pending. ``--dry-run`` prints what would be replayed.
- ``purge`` marks letters handled without replaying them, after confirmation (``--yes``).

A letter settled after one left pending may show up again on log brokers (Kafka keeps one
position per partition): replaying it twice is safe, the event id is the same.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import threading
from collections.abc import Sequence
from typing import Any

from ..deadletters import DeadLetter, read_dead_letter
from ..driver import Delivery
from ..errors import ChannelNotFoundError
from ..retry import dead_letter_channel
from ..wire import replayed
from ._common import (
    DECLINED,
    NOT_FOUND,
    OK,
    CommandError,
    Progress,
    count,
    json_argument,
    print_json,
    printable,
    require_existing_sqlite,
    require_url,
    seconds,
    shorten,
    table,
    url_argument,
)
from ._records import (
    connect_reading,
    creates_channels,
    decode_body,
    load_type,
    open_subscription,
    scan,
)

_BATCH = 100


def add(commands: Any) -> None:
    group = commands.add_parser(
        "dlq",
        help="dead letters: list, show, replay, purge",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = group.add_subparsers(dest="dlq_command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser, *, filters: bool) -> None:
        url_argument(p)
        p.add_argument("--action", required=True, help="the handler action whose .dlq to read")
        p.add_argument("--limit", type=count, default=None, help="at most this many letters")
        p.add_argument(
            "--idle",
            type=seconds,
            default=3.0,
            help="stop reading after this many quiet seconds (default 3; more on slow brokers)",
        )
        if filters:
            p.add_argument("--id", action="append", default=[], help="event id (repeatable)")
            p.add_argument("--reason", choices=["poison", "permanent-error", "retries-exhausted"])
            p.add_argument("--error-type", default=None, help="e.g. TimeoutError")
            p.add_argument("--key", default=None)
        json_argument(p)

    p = sub.add_parser("list", help="the pending dead letters: reason, error, attempts")
    common(p, filters=True)
    p.set_defaults(coro=run_list)

    p = sub.add_parser("show", help="one dead letter whole: headers, context, payload")
    common(p, filters=False)
    p.add_argument(
        "--id", dest="event_id", required=True, help="event id (or coordinates) of the letter"
    )
    p.add_argument("--type", metavar="MODULE:CLASS", help="protobuf class of the payload")
    p.set_defaults(coro=run_show)

    p = sub.add_parser("replay", help="republish dead letters to their source channel")
    common(p, filters=True)
    p.add_argument("--to", default=None, help="replay to this channel instead of the source")
    p.add_argument("--dry-run", action="store_true", help="print what would be replayed")
    p.set_defaults(coro=run_replay)

    p = sub.add_parser("purge", help="drop pending dead letters without replaying them")
    common(p, filters=True)
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--dry-run", action="store_true", help="print what would be purged")
    p.set_defaults(coro=run_purge)


def _matches(letter: DeadLetter[Any], args: argparse.Namespace) -> bool:
    ids = getattr(args, "id", [])
    if ids and letter.event_id not in ids and letter.coordinates not in ids:
        return False
    if getattr(args, "reason", None) and letter.reason != args.reason:
        return False
    if getattr(args, "error_type", None) and letter.error_type != args.error_type:
        return False
    return not (getattr(args, "key", None) and letter.key != args.key)


def _summary(letter: DeadLetter[Any]) -> dict[str, Any]:
    return {
        "id": letter.event_id,
        "coordinates": letter.coordinates,
        "key": letter.key,
        "reason": letter.reason,
        "error_type": letter.error_type,
        "error": letter.error_message,
        "attempts": letter.attempts,
        "source_channel": letter.source_channel,
        "emitted_at": letter.emitted_at.isoformat() if letter.emitted_at else None,
    }


class _Pending:
    """The pending letters of an action, read as ``<action>.dlq-replay``; settle on exit."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.channel = dead_letter_channel(args.action)

    async def __aenter__(self) -> _Pending:
        url = require_url(self.args)
        self.url = url
        self.driver = await connect_reading(url)  # checks the URL; creates no channel
        try:
            require_existing_sqlite(url)
            try:
                self.subscription = await open_subscription(
                    self.driver,
                    f"{self.args.action}.dlq-replay",
                    [self.channel],
                    "earliest",
                    prefetch=self.args.limit or 100_000,
                )
            except ChannelNotFoundError:
                raise CommandError(
                    f"action {self.args.action!r} has no dead-letter channel "
                    f"{self.channel!r} (the dlq commands create none; the action's receiver "
                    "creates it when it starts): check the action's name; `hexa-event "
                    f"doctor URL --action {self.args.action}` shows what is there",
                    NOT_FOUND,
                ) from None
        except BaseException:
            await self.driver.close()
            raise
        try:  # a fetch that fails (the broker went away) or Ctrl-C: close what is open
            self.deliveries = await scan(
                self.subscription, limit=self.args.limit, idle=self.args.idle
            )
            self.letters = [
                read_dead_letter(d.record, None, coordinates=d.coordinates) for d in self.deliveries
            ]
        except BaseException:
            await self.__aexit__()
            raise
        return self

    def chosen(self) -> list[tuple[Delivery, DeadLetter[Any]]]:
        return [
            (d, letter)
            for d, letter in zip(self.deliveries, self.letters, strict=True)
            if _matches(letter, self.args)
        ]

    async def settle(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            delivery.ack()
        if deliveries:
            await self.subscription.settle(deliveries)

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.subscription.close()
        finally:
            await self.driver.close()


async def run_list(args: argparse.Namespace) -> int:
    async with _Pending(args) as pending:
        letters = [letter for _, letter in pending.chosen()]
    if args.json:
        print_json([_summary(letter) for letter in letters])
        return OK
    if not letters:
        print(f"no pending dead letters for {args.action}")
        return OK
    rows = [
        [
            printable(letter.event_id),
            printable(letter.key),
            printable(letter.reason),
            str(letter.attempts),
            printable(shorten(f"{letter.error_type}: {letter.error_message}", 60)),
            letter.emitted_at.strftime("%Y-%m-%d %H:%M:%S") if letter.emitted_at else "",
        ]
        for letter in letters
    ]
    sys.stdout.write(table(rows, ["ID", "KEY", "REASON", "ATTEMPTS", "ERROR", "EMITTED (UTC)"]))
    print(f"{len(letters)} pending dead letters of {args.action} ({pending.channel})")
    return OK


async def run_show(args: argparse.Namespace) -> int:
    payload_type = load_type(args.type)
    async with _Pending(args) as pending:
        found = [
            letter
            for letter in pending.letters
            if args.event_id in (letter.event_id, letter.coordinates)
        ]
    if not found:
        raise CommandError(
            f"no pending dead letter {args.event_id!r} of {args.action}; run "
            f"`hexa-event dlq list URL --action {args.action}` to see the ids",
            NOT_FOUND,
        )
    letter = found[0]
    body, decoded_as = decode_body(letter.codec, letter.body, payload_type)
    whole = {
        **_summary(letter),
        "action": letter.action,
        "root_event_id": letter.root_event_id,
        "source_coordinates": letter.source_coordinates,
        "codec": letter.codec,
        "decoded_as": decoded_as,
        "headers": {k: v.decode("utf-8", "replace") for k, v in letter.headers.items()},
        "body": body,
    }
    if args.json:
        print_json(whole)
        return OK
    for name in (
        "id",
        "key",
        "reason",
        "error_type",
        "error",
        "attempts",
        "action",
        "source_channel",
        "source_coordinates",
        "coordinates",
        "root_event_id",
        "emitted_at",
        "codec",
    ):
        print(f"{name:>18}: {printable(str(whole[name]))}")
    print(f"{'headers':>18}:")
    for key, value in sorted(whole["headers"].items()):
        print(f"{'':>20}{printable(key)} = {printable(shorten(value, 100))}")
    print(f"{'body':>18}: ({printable(decoded_as)})")
    text = json.dumps(body, indent=2, ensure_ascii=False) if decoded_as != "base64" else body
    for line in printable(str(text), lines=True).splitlines():
        print(f"{'':>20}{line}")
    return OK


async def run_replay(args: argparse.Namespace) -> int:
    async with _Pending(args) as pending:
        chosen = pending.chosen()
        copies = []
        skipped: list[Delivery] = []
        for delivery, letter in chosen:
            copy = replayed(delivery.record, delivery.coordinates, args.to)
            if copy is None:
                skipped.append(delivery)
            else:
                copies.append((delivery, letter, copy))
        by_channel: dict[str, int] = {}
        for _, _, copy in copies:
            by_channel[copy.channel] = by_channel.get(copy.channel, 0) + 1
        if not args.dry_run and copies:
            from ..connect import connect

            # The reading connection creates no channel; the copies go through one that
            # does, as an emitter's would (a --to channel may be new).
            writer = connect(pending.url)
            if not creates_channels(writer):
                await writer.close()
                writer = pending.driver
            try:
                progress = Progress(len(copies), f"replaying {args.action}")
                for start in range(0, len(copies), _BATCH):
                    batch = copies[start : start + _BATCH]
                    await writer.publish([copy for _, _, copy in batch])
                    await pending.settle([delivery for delivery, _, _ in batch])
                    progress.advance(len(batch))
                progress.finish()
            finally:
                if writer is not pending.driver:
                    await writer.close()
    report = {
        "action": args.action,
        "dry_run": args.dry_run,
        "replayed": len(copies),
        "skipped_without_source": len(skipped),
        "left_pending": len(pending.letters) - len(copies),
        "by_channel": by_channel,
        "ids": [letter.event_id for _, letter, _ in copies],
    }
    if args.json:
        print_json(report)
        return OK
    targets = ", ".join(f"{n} to {c}" for c, n in sorted(by_channel.items())) or "none"
    verb = "would replay" if args.dry_run else "replayed"
    if args.dry_run:
        for _, letter, copy in copies:
            print(printable(f"would replay {letter.event_id} (key {letter.key}) to {copy.channel}"))
    print(
        f"{verb} {len(copies)} dead letters of {args.action} ({targets}), "
        f"skipped {len(skipped)} without a source channel (give --to)"
    )
    return OK


async def run_purge(args: argparse.Namespace) -> int:
    async with _Pending(args) as pending:
        chosen = pending.chosen()
        if args.dry_run or not chosen:
            if args.json:
                print_json({"action": args.action, "would_purge": len(chosen), "purged": 0})
            else:
                print(f"would purge {len(chosen)} dead letters of {args.action}")
            return OK
        if not args.yes:
            if not sys.stdin.isatty():
                raise CommandError(
                    f"purging {len(chosen)} dead letters needs confirmation: add --yes "
                    "(no terminal to ask on)",
                    DECLINED,
                )
            question = f"purge {len(chosen)} dead letters of {args.action}? [y/N] "
            answer = await _ask(question)
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing purged")
                return DECLINED
        await pending.settle([delivery for delivery, _ in chosen])
    if args.json:
        print_json({"action": args.action, "purged": len(chosen)})
    else:
        print(f"purged {len(chosen)} dead letters of {args.action}")
    return OK


async def _ask(question: str) -> str:
    """``input(question)`` in a daemon thread. Not ``asyncio.to_thread``: after Ctrl-C at
    the prompt, ``asyncio.run`` waits for its executor's threads, and the one blocked in
    ``input()`` kept the command from exiting until Enter was pressed."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str] = loop.create_future()

    def settle(value: str | None, error: BaseException | None) -> None:
        if answer.done():
            return
        if error is None:
            answer.set_result(value or "")
        else:
            answer.set_exception(error)

    def read() -> None:
        value, error = None, None
        try:
            value = input(question)
        except BaseException as exc:  # EOF: stdin closed; reported as the answer's error
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=read, name="hexa-event-confirm", daemon=True).start()
    return await answer
