"""FastStream's side of ``request_reply.py``: runs inside ``benchmarks/.bench-venv``.

A FastStream broker (Kafka through aiokafka, or NATS) with one subscriber that returns its
answer (FastStream publishes the return value to the request's reply address), and
``broker.request()`` called ``--count`` times one after another after a warm-up. Prints one
JSON line: the p50 and p99 round trip in seconds, or ``{"error": ...}`` when FastStream
cannot do it on that broker.

    .bench-venv/bin/python _faststream_request.py --broker nats --url nats://127.0.0.1:4222
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from typing import Any


async def run(args: argparse.Namespace) -> dict[str, Any]:
    broker: Any
    if args.broker == "kafka":
        from faststream.kafka import KafkaBroker

        broker = KafkaBroker(args.url, logger=None)
    else:
        from faststream.nats import NatsBroker

        broker = NatsBroker(args.url, logger=None)
    subject = f"fs-rq-{uuid.uuid4().hex[:8]}"

    @broker.subscriber(subject)
    async def answer(body: dict[str, Any]) -> dict[str, Any]:
        return {"n": body["n"]}

    await broker.start()
    try:
        for n in range(5):
            await broker.request({"n": n}, subject, timeout=60)
        times = []
        for n in range(args.count):
            began = time.perf_counter()
            reply = await broker.request({"n": n}, subject, timeout=60)
            times.append(time.perf_counter() - began)
            assert json.loads(reply.body) == {"n": n}
    finally:
        await broker.stop()
    ordered = sorted(times)
    return {
        "p50": statistics.median(times),
        "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", choices=["kafka", "nats"], required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, default=300)
    args = parser.parse_args()
    try:
        result = asyncio.run(asyncio.wait_for(run(args), 300))
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
