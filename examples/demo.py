"""The hexa-event demo: an order service and its consumers, on the embedded default.

    python examples/demo.py [--url URL] [--verbose]

Three orders are emitted, and the first one twice (a producer retry after a timeout, same
event id). billing charges each card exactly once: its inbox records the event id in the
same transaction as the charge, so the re-sent event is acked without charging again.
notifications fails on its first try and succeeds on the retry; analytics is broken and its
events end in the dead-letter queue, where an operator's handler reads why. Run it twice:
the SQL log keeps every event, but each action only handles what it has not handled yet.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

import hexa_event as he
from hexa_event.inbox import Inbox, migrate_async

DEFAULT_URL = "sqlite:///data/demo.db"
BILLING_DB = "sqlite+aiosqlite:///data/demo-billing.db"  # the billing service's own database

charges = sa.Table(
    "charges",
    sa.MetaData(),
    sa.Column("order_id", sa.String, primary_key=True),
    sa.Column("cents", sa.Integer, nullable=False),
)


@dataclass
class OrderPlaced:
    order_id: str
    customer: str
    total_cents: int


def say(actor: str, text: str) -> None:
    print(f"  {actor:<14} {text}", flush=True)


async def main(url: str) -> int:
    run = uuid.uuid4().hex[:6]
    driver = he.connect(url)
    emitter = driver.emitter()
    counts: Counter[str] = Counter()
    quick_retry = he.RetryPolicy(max_retries=2, initial_delay=0.2)

    inbox = Inbox(BILLING_DB)
    await migrate_async(inbox.engine)
    async with inbox.engine.begin() as conn:
        await conn.run_sync(charges.metadata.create_all)

    service = driver.receiver("demo-service")

    @service.subscribe("orders", payload=OrderPlaced, action="billing.charge-card")
    async def charge(ctx: he.Context, msg: he.Message[OrderPlaced]) -> None:
        counts["deliveries"] += 1
        if await inbox.seen(ctx):
            say("billing", f"{msg.payload.order_id} is charged already: duplicate acked")
        await charge_once(ctx, msg)

    @inbox.idempotent
    async def charge_once(
        ctx: he.Context, msg: he.Message[OrderPlaced], session: AsyncSession
    ) -> None:
        order = msg.payload
        await session.execute(
            charges.insert().values(order_id=order.order_id, cents=order.total_cents)
        )
        counts["charged"] += 1
        say(
            "billing",
            f"charged {order.customer} {order.total_cents / 100:.2f} EUR "
            f"for {order.order_id} (correlation {ctx.correlation_id})",
        )

    @service.subscribe(
        "orders", payload=OrderPlaced, action="notifications.send-receipt", retry=quick_retry
    )
    async def receipt(ctx: he.Context, msg: he.Message[OrderPlaced]) -> None:
        if msg.attempt == 1:
            counts["receipt-failures"] += 1
            say("notifications", f"mail server busy for {msg.payload.order_id}, will retry")
            raise ConnectionError("mail server busy")
        counts["receipts"] += 1
        say("notifications", f"sent receipt for {msg.payload.order_id} on attempt {msg.attempt}")

    @service.subscribe("orders", payload=OrderPlaced, action="analytics.export", retry=quick_retry)
    async def export(ctx: he.Context, msg: he.Message[OrderPlaced]) -> None:
        counts["export-failures"] += 1
        raise RuntimeError("analytics warehouse rejected the schema")

    @service.subscribe(he.dead_letter_channel("analytics.export"), action="ops.dead-letters")
    async def dead_letter(ctx: he.Context, msg: he.Message[bytes]) -> None:
        counts["dead-letters"] += 1
        h = msg.headers
        say(
            "ops",
            f"dead letter for {msg.key}: "
            f"{h['HEXA_DEAD_LETTER_REASON'].decode()} after {h['HEXA_ATTEMPT'].decode()} "
            f"attempts, last error {h['HEXA_ERROR_TYPE'].decode()}: "
            f"{h['HEXA_ERROR_MESSAGE'].decode()}",
        )

    print(f"hexa-event demo on {url}\n")
    began = time.monotonic()
    async with service:
        orders = [
            OrderPlaced(f"order-{run}-{n}", customer, cents)
            for n, (customer, cents) in enumerate(
                [("ada", 4200), ("grace", 1999), ("linus", 12500)], start=1
            )
        ]
        first_id = ""
        for order in orders:
            ctx = he.Context(correlation_id=f"req-{order.order_id}", locale="en")
            event_id = await emitter.emit(he.Event("orders", order.order_id, order), ctx)
            first_id = first_id or event_id
            say("orders", f"emitted {order.order_id} as event {event_id}")
        again = he.Event("orders", orders[0].order_id, orders[0], id=first_id)
        await emitter.emit(again, he.Context(correlation_id=f"req-{orders[0].order_id}"))
        say("orders", f"emitted {orders[0].order_id} again, same event id (a producer retry)")

        sent = len(orders) + 1
        deadline = time.monotonic() + 30
        while not (
            counts["deliveries"] >= sent
            and counts["receipts"] >= sent
            and counts["dead-letters"] >= sent
        ):
            if time.monotonic() > deadline:
                print(f"\ndemo timed out waiting for the handlers: {counts}", file=sys.stderr)
                return 1
            await asyncio.sleep(0.05)
    await driver.close()
    async with inbox.engine.connect() as conn:
        rows = (await conn.execute(sa.select(sa.func.count()).select_from(charges))).scalar()
    await inbox.close()
    print(
        f"\nIn {time.monotonic() - began:.1f}s: {counts['deliveries']} events reached billing, "
        f"{counts['charged']} cards were charged (billing's table holds {rows} charges from "
        f"all runs); {counts['receipts']} receipts sent after {counts['receipt-failures']} "
        f"failed tries; {counts['export-failures']} export failures ended as "
        f"{counts['dead-letters']} dead letters."
    )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("HEXA_DEMO_URL", DEFAULT_URL))
    parser.add_argument("--verbose", action="store_true", help="show the library's logs")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.WARNING if args.verbose else logging.CRITICAL,
        format="%(levelname)s %(name)s: %(message)s",
    )
    os.makedirs("data", exist_ok=True)
    sys.exit(asyncio.run(main(args.url)))
