"""JetStream throughput: hexa-event against raw nats-py, publish and pull-consume-ack.

Both sides use the same nats-server, the same file stream (``HEXA_BENCH``, created by the
driver; each round a subject of its own) and the same records: the ~80-byte JSON body and the
headers our envelope writes, plus ``Nats-Msg-Id`` (the event id) on both sides.

- Publish. Raw: ``js.publish_async`` for every record (nats-py's window of 4,000 in
  flight), then awaiting every PubAck future. Ours: ``Emitter.emit_many`` in batches of
  1,000 events, 4 batches in flight (payload encoding, context headers and event ids
  included), each returning once JetStream acknowledged it. The driver alone publishes
  records sealed before timing.
- Consume. A subject pre-filled with N records. Raw: a durable pull consumer,
  ``fetch(256)`` in a loop, msgspec-decode each body into the dataclass, ``msg.ack()``.
  Ours: a receiver whose handler takes the decoded dataclass and returns (context,
  per-key lanes, dedup keys, ack, batched settle). The driver alone fetches, decodes and
  settles batches. Timed from the first record to the last one acknowledged.
- Partitioned (``NatsOptions(partitions=8)``, stream ``HEXA_BENCH_P8``): our emit and our
  receiver again, on a stream whose records carry their key's partition; the one receiver
  holds all 8 partitions (8 pinned consumers). The raw side stays the unpartitioned one.

    HEXA_NATS_URL=nats://127.0.0.1:4222 python benchmarks/nats_bench.py [--count 20000]
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import msgspec
import nats
from _harness import Comparison, Tick, cli, compare_all, in_batches, sealed, timed

import hexa_event as he
from hexa_event.driver import RawRecord, SubscriptionSpec

URL = os.environ.get("HEXA_NATS_URL", "nats://127.0.0.1:4222")
STREAM = "HEXA_BENCH"
PREFIX = "hexa-bench"
OPTIONS = {
    "stream": STREAM,
    "subject_prefix": PREFIX,
    "max_age": 3600.0,
    "consumer_inactive_threshold": 120.0,
}
PARTITIONED = {
    **OPTIONS,
    "stream": "HEXA_BENCH_P8",
    "subject_prefix": "hexa-bench-p8",
    "partitions": 8,
}
KEYS = 64
BATCH = 1000
IN_FLIGHT = 4


def _channel(kind: str) -> str:
    return f"bench-{kind}-{uuid.uuid4().hex[:8]}"


def _sealed(channel: str, count: int) -> list[RawRecord]:
    return sealed(channel, count, lambda n: Tick(n, "tick", 4200, "EUR", "x"))


def _nats_headers(record: RawRecord) -> dict[str, str]:
    headers = {k: v.decode() for k, v in record.headers.items()}
    headers["HEXA_KEY"] = record.key
    headers["Nats-Msg-Id"] = headers["HEXA_EVENT_ID"]
    return headers


# -- publish ------------------------------------------------------------------------------------


async def raw_publish(count: int) -> float:
    channel = _channel("pub-raw")
    subject = f"{PREFIX}.{channel}"
    prepared = [(r.body, _nats_headers(r)) for r in _sealed(channel, count)]
    nc = await nats.connect(URL)
    js = nc.jetstream()
    await js.publish(subject, b"warm-up")
    began = time.perf_counter()
    futures = [await js.publish_async(subject, body, headers=h) for body, h in prepared]
    async with asyncio.timeout(120):
        await asyncio.gather(*futures)
    elapsed = time.perf_counter() - began
    await nc.close()
    return count / elapsed


async def our_publish(count: int, options: dict[str, object] = OPTIONS) -> float:
    channel = _channel("pub-ours")
    connection = he.connect(URL, **options)
    emitter = connection.emitter()
    await emitter.emit(he.Event(channel, "warm-up", Tick(-1, "", 0, "", "")))
    ctx = he.Context(correlation_id="bench")

    async def send(start: int, stop: int) -> None:
        await emitter.emit_many(
            (
                he.Event(channel, f"k{n % KEYS}", Tick(n, "tick", 4200, "EUR", "x"))
                for n in range(start, stop)
            ),
            ctx,
        )

    rate = await timed(count, lambda: in_batches(count, send, BATCH, IN_FLIGHT))
    await connection.close()
    return rate


async def driver_publish(count: int) -> float:
    channel = _channel("pub-drv")
    connection = he.connect(URL, **OPTIONS)
    records = _sealed(channel, count)
    await connection.publish(records[:1])

    async def send(start: int, stop: int) -> None:
        await connection.publish(records[start:stop])

    rate = await timed(count, lambda: in_batches(count, send, BATCH, IN_FLIGHT))
    await connection.close()
    return rate


# -- consume ------------------------------------------------------------------------------------

_filled: dict[tuple[int, str], str] = {}


async def fill(count: int, options: dict[str, object] = OPTIONS) -> str:
    """A channel holding ``count`` sealed records (once per count and stream)."""
    stream = str(options["stream"])
    if (count, stream) not in _filled:
        channel = _channel("consume")
        connection = he.connect(URL, **options)
        records = _sealed(channel, count)
        for start in range(0, count, BATCH):
            await connection.publish(records[start : start + BATCH])
        await connection.close()
        _filled[count, stream] = channel
    return _filled[count, stream]


async def raw_consume(count: int) -> float:
    channel = await fill(count)
    decoder = msgspec.json.Decoder(Tick)
    nc = await nats.connect(URL)
    js = nc.jetstream()
    durable = f"raw-{uuid.uuid4().hex[:8]}"
    sub = await js.pull_subscribe(f"{PREFIX}.{channel}", durable=durable, stream=STREAM)
    seen = 0
    began = None
    while seen < count:
        try:
            messages = await sub.fetch(256, timeout=5)
        except nats.errors.TimeoutError:
            continue
        if began is None:
            began = time.perf_counter()
        for msg in messages:
            decoder.decode(msg.data)
            await msg.ack()
        seen += len(messages)
    await nc.flush()
    elapsed = time.perf_counter() - (began or time.perf_counter())
    await js.delete_consumer(STREAM, durable)
    await nc.close()
    return count / elapsed


async def our_consume(count: int, options: dict[str, object] = OPTIONS) -> float:
    channel = await fill(count, options)
    connection = he.connect(URL, **options)
    receiver = connection.receiver("bench", concurrency=256)
    done = asyncio.Event()
    seen = 0
    began = 0.0

    @receiver.subscribe(channel, action=f"bench-{uuid.uuid4().hex[:8]}", payload=Tick)
    async def handle(ctx: he.Context, msg: he.Message[Tick]) -> None:
        nonlocal seen, began
        if seen == 0:
            began = time.perf_counter()
        seen += 1
        if seen == count:
            done.set()

    async with receiver:
        await done.wait()
    elapsed = time.perf_counter() - began  # the close settled (acked) the last ones
    await connection.close()
    return count / elapsed


async def driver_consume(count: int) -> float:
    channel = await fill(count)
    decoder = msgspec.json.Decoder(Tick)
    connection = he.connect(URL, **OPTIONS)
    sub = await connection.subscribe(
        SubscriptionSpec(group=f"drv-{uuid.uuid4().hex[:8]}", channels=(channel,))
    )
    seen = 0
    began = None
    while seen < count:
        deliveries = await sub.fetch(256)
        if began is None:
            began = time.perf_counter()
        for delivery in deliveries:
            decoder.decode(delivery.record.body)
            delivery.ack()
        await sub.settle(deliveries)
        seen += len(deliveries)
    elapsed = time.perf_counter() - (began or time.perf_counter())
    await sub.close()
    await connection.close()
    return count / elapsed


async def partitioned_publish(count: int) -> float:
    return await our_publish(count, PARTITIONED)


async def partitioned_consume(count: int) -> float:
    return await our_consume(count, PARTITIONED)


RAW_PUBLISH = ("raw nats-py publish_async", raw_publish)
RAW_CONSUME = ("raw nats-py fetch+decode+ack", raw_consume)
COMPARISONS = (
    Comparison(
        "JetStream publish (acked, Nats-Msg-Id)", RAW_PUBLISH, ("hexa-event emit_many", our_publish)
    ),
    Comparison(
        "JetStream publish, driver only (records sealed before timing)",
        RAW_PUBLISH,
        ("NatsDriver.publish", driver_publish),
    ),
    Comparison("JetStream pull consume + ack", RAW_CONSUME, ("hexa-event receiver", our_consume)),
    Comparison(
        "JetStream pull consume + ack, driver only (fetch, decode, settle)",
        RAW_CONSUME,
        ("NatsSubscription fetch/settle", driver_consume),
    ),
    Comparison(
        "JetStream publish, partitioned (8 partitions)",
        RAW_PUBLISH,
        ("hexa-event emit_many, partitions=8", partitioned_publish),
    ),
    Comparison(
        "JetStream pull consume + ack, partitioned (8 partitions, one member)",
        RAW_CONSUME,
        ("hexa-event receiver, partitions=8", partitioned_consume),
    ),
)


async def main() -> None:
    args = cli(__doc__.splitlines()[0], 20_000)
    connection = he.connect(URL, **OPTIONS)
    await connection.provision([])  # the stream, before the raw client's first round
    await connection.close()
    await compare_all(args, COMPARISONS)


if __name__ == "__main__":
    asyncio.run(main())
