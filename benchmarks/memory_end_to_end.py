"""End-to-end emit -> handle -> ack through the memory driver, against a bare asyncio pipeline.

The reference does the same work without the library: JSON-encode a dataclass with msgspec,
put (key, headers, body) on an asyncio queue, a consumer task decodes it into the dataclass
and counts it. Ours goes through Emitter.emit_many, the memory driver, the receiver's
per-key lanes, context extraction, the middleware chain, and ack.

    python benchmarks/memory_end_to_end.py [--count 20000] [--rounds 5]
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import msgspec
from _harness import cli, compare, finish, timed

import hexa_event as he

BATCH = 500
KEYS = 64


@dataclass
class Tick:
    n: int
    name: str


async def bare(count: int) -> float:
    encoder = msgspec.json.Encoder()
    decoder = msgspec.json.Decoder(Tick)
    queue: asyncio.Queue[tuple[str, dict[str, bytes], bytes]] = asyncio.Queue()
    done = asyncio.Event()
    seen = 0

    async def consume() -> None:
        nonlocal seen
        while True:
            _key, _headers, body = await queue.get()
            decoder.decode(body)
            seen += 1
            if seen == count:
                done.set()

    async def body() -> None:
        consumer = asyncio.create_task(consume())
        for start in range(0, count, BATCH):
            for n in range(start, min(start + BATCH, count)):
                queue.put_nowait(
                    (f"k{n % KEYS}", {"id": str(n).encode()}, encoder.encode(Tick(n, "tick")))
                )
            await asyncio.sleep(0)
        await done.wait()
        consumer.cancel()

    return await timed(count, body)


async def ours(count: int) -> float:
    driver = he.connect(f"memory://bench-{uuid.uuid4().hex}")
    emitter = driver.emitter()
    receiver = driver.receiver("bench", concurrency=256)
    done = asyncio.Event()
    seen = 0

    @receiver.subscribe("ticks", action="bench.count", payload=Tick)
    async def handle(ctx: he.Context, msg: he.Message[Tick]) -> None:
        nonlocal seen
        seen += 1
        if seen == count:
            done.set()

    async def body() -> None:
        async with receiver:
            for start in range(0, count, BATCH):
                await emitter.emit_many(
                    he.Event("ticks", f"k{n % KEYS}", Tick(n, "tick"))
                    for n in range(start, min(start + BATCH, count))
                )
            await done.wait()

    rate = await timed(count, body)
    await driver.close()
    return rate


async def main() -> None:
    args = cli(__doc__.splitlines()[0], 20_000)
    result = await compare(
        "memory driver end to end (emit -> handle -> ack)",
        args.count,
        ("bare asyncio queue + msgspec", bare),
        ("hexa-event memory://", ours),
        rounds=args.rounds,
        target=">= 0.3",
    )
    finish(result, args.json)


if __name__ == "__main__":
    asyncio.run(main())
