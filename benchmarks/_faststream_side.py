"""FastStream's side of ``faststream_kafka.py``: runs inside ``benchmarks/.bench-venv``.

One run: a FastStream broker (aiokafka or confluent flavour) with one subscriber in a new
consumer group reads a pre-filled topic from the start, decodes each body into a pydantic
model (FastStream's typed decode) and counts it. It stops after ``--count`` events, or
``--budget`` seconds after the first one (the per-message commit modes are slow), and prints
one JSON line: events handled, the rate from the first handled event to the last, and the
time from ``broker.start()`` to the first handled event.

Modes (FastStream 0.7 ``AckPolicy``):

- ``default``: the subscriber's defaults, ``ACK_FIRST`` (Kafka auto-commit in the
  background: offsets may be committed before the handler ran, so not at-least-once).
- ``ack``: ``AckPolicy.ACK``, a commit after each handled message (at-least-once).
- ``batch``: ``batch=True, max_records=500`` with ``AckPolicy.MANUAL`` and one
  ``msg.ack()`` (a commit) after each handled batch: its fastest at-least-once setting.

FastStream's per-message access log is switched off (``logger=None``): hexa-event logs
nothing per event either.

    .bench-venv/bin/python _faststream_side.py --flavour confluent --mode batch --topic T
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import sys
import time
import uuid
from typing import Any

from pydantic import BaseModel

STOP_TIMEOUT = 5.0


class Order(BaseModel):
    n: int
    order_id: str
    customer: str
    sku: str
    quantity: int
    total: int
    currency: str
    status: str
    note: str


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flavour", choices=["aiokafka", "confluent"], required=True)
    parser.add_argument("--mode", choices=["default", "ack", "batch"], required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--budget", type=float, default=0.0, help="stop this long after the first")
    parser.add_argument("--max-records", type=int, default=500)
    parser.add_argument(
        "--tuned", action="store_true", help="the collector tuned as `hexa-event run` tunes it"
    )
    return parser.parse_args()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from faststream import AckPolicy

    if args.tuned:  # what hexa_event.runner.collector.tune() does (not importable here)
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, *gc.get_threshold()[1:])

    broker: Any
    if args.flavour == "aiokafka":
        from faststream.kafka import KafkaBroker
        from faststream.kafka.annotations import KafkaMessage
    else:
        from faststream.confluent import KafkaBroker  # type: ignore[assignment]
        from faststream.confluent.annotations import KafkaMessage  # type: ignore[assignment]
    broker = KafkaBroker(args.bootstrap, logger=None)
    done = asyncio.Event()
    handled = 0
    first = last = 0.0
    budget = args.budget or float("inf")

    def count(n: int) -> None:
        nonlocal handled, first, last
        last = time.perf_counter()
        if handled == 0:
            first = last
        handled += n
        if handled >= args.count or last - first >= budget:
            done.set()

    common: dict[str, Any] = {
        "group_id": f"fs-{args.flavour}-{args.mode}-{uuid.uuid4().hex[:8]}",
        "auto_offset_reset": "earliest",
    }
    if args.mode == "batch":

        @broker.subscriber(  # type: ignore[misc]
            args.topic,
            batch=True,
            max_records=args.max_records,
            ack_policy=AckPolicy.MANUAL,
            **common,
        )
        async def handle_batch(body: list[Order], msg: KafkaMessage) -> None:
            count(len(body))
            await msg.ack()

    else:
        policy = {"ack": {"ack_policy": AckPolicy.ACK}, "default": {}}[args.mode]

        @broker.subscriber(args.topic, **common, **policy)  # type: ignore[misc]
        async def handle(body: Order) -> None:
            count(1)

    began = time.perf_counter()
    await broker.start()
    try:
        await asyncio.wait_for(done.wait(), timeout=600)
    finally:
        elapsed = last - first
        result = {
            "handled": handled,
            "rate": handled / elapsed if elapsed > 0 else 0.0,
            "start_to_first": first - began,
        }
        print(json.dumps(result), flush=True)
        # Stopping is not measured; the confluent flavour's stop after a per-message commit
        # run can take a minute, so it gets a few seconds and the process then exits.
        stopping = time.perf_counter()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(broker.stop(), timeout=STOP_TIMEOUT)
        print(f"stop took {time.perf_counter() - stopping:.1f} s", file=sys.stderr, flush=True)
    return result


def main() -> None:
    args = parse()
    asyncio.run(run(args))
    os._exit(0)  # whatever a stop that timed out left running must not keep us alive


if __name__ == "__main__":
    main()
