"""Which raw pulsar-client configuration is fastest here? (run by hand; ``run.py`` skips it)

    python benchmarks/_pulsar_configs.py emit|consume [--count 20000] [--rounds 3] [--only "a|b"]

Every configuration runs once per round, rounds alternate, medians are printed. Records are
those of ``pulsar_bench.py`` (64 keys, our envelope's body and headers as properties);
consumers are Key_Shared with batch-index acks and ``read`` each message (body decoded,
properties and key read, as any hexa-event consumer must). The fastest two are
``pulsar_bench.py``'s references (see its docstring for the figures measured).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import pulsar
import pulsar.asyncio as pulsar_asyncio
from pulsar_bench import (
    KEYS,
    SUBSCRIPTION,
    URL,
    Confirm,
    Tick,
    _sealed,
    consume_timed,
    emit_timed,
    full,
    producer_config,
    raw_consume_asyncio_loop,
    raw_consume_batches_loop,
    raw_consume_sync_loop,
    read,
)

Run = Callable[[int], Awaitable[float]]
_SAMPLE = _sealed("sample", 1)[0]
BODY = _SAMPLE.body
PROPS = {name: value.decode() for name, value in _SAMPLE.headers.items()}
KEY_NAMES = [f"k{n}" for n in range(KEYS)]


def topic(prefix: str) -> str:
    return f"cfg-{prefix}-{uuid.uuid4().hex[:8]}"


def emit_callbacks(count: int, **overrides: Any) -> float:
    """``send_async`` with a callback per message, then ``flush``; done when all are Ok."""

    def send(producer: pulsar.Producer, confirmed: Confirm) -> None:
        for n in range(count):
            producer.send_async(
                BODY,
                confirmed,
                properties=PROPS,
                partition_key=KEY_NAMES[n % KEYS],
                event_timestamp=int(time.time() * 1000),
            )

    return emit_timed(topic("emit"), count, (BODY, PROPS), send, **overrides)


def emit_binding(count: int, **overrides: Any) -> float:
    """As :func:`emit_callbacks`, through the binding's producer and message builder."""
    builder = pulsar._pulsar.MessageBuilder

    def send(producer: pulsar.Producer, confirmed: Confirm) -> None:
        native = producer._producer
        for n in range(count):
            message = builder()
            message.content(BODY)
            message.properties(PROPS)
            message.partition_key(KEY_NAMES[n % KEYS])
            message.event_timestamp(int(time.time() * 1000))
            native.send_async(message.build(), confirmed)

    return emit_timed(topic("emit"), count, (BODY, PROPS), send, **overrides)


async def emit_asyncio(count: int, window: int) -> float:
    """``pulsar.asyncio``: ``await producer.send`` in windows gathered at once."""
    client = pulsar_asyncio.Client(URL)
    producer = await client.create_producer(
        full(topic("emit-asyncio")),
        batching_type=pulsar.BatchingType.KeyBased,
        batching_max_publish_delay_ms=5,
        max_pending_messages=window * 4,
    )
    await producer.send(BODY, properties=PROPS, partition_key="warm-up")
    began = time.perf_counter()
    for start in range(0, count, window):
        await asyncio.gather(
            *(
                producer.send(BODY, properties=PROPS, partition_key=KEY_NAMES[n % KEYS])
                for n in range(start, min(start + window, count))
            )
        )
    elapsed = time.perf_counter() - began
    await producer.close()
    await client.close()
    return count / elapsed


def fill(count: int) -> str:
    name = topic("consume")
    client = pulsar.Client(URL)
    producer = client.create_producer(full(name), **producer_config(count))
    for n in range(count):
        producer.send_async(
            BODY, lambda *_: None, properties=PROPS, partition_key=KEY_NAMES[n % KEYS]
        )
    producer.flush()
    producer.close()
    client.close()
    return name


def consume_receive(count: int, **overrides: Any) -> float:
    """A thread blocking in ``receive()``: decode, acknowledge."""
    return raw_consume_sync_loop(fill(count), count, **overrides)


def consume_receive_binding(count: int, **overrides: Any) -> float:
    """As :func:`consume_receive`, through the binding objects under the wrappers."""

    def loop(consumer: pulsar.Consumer, decoder: msgspec.json.Decoder[Tick]) -> None:
        native = consumer._consumer
        for _ in range(count):
            message = native.receive()
            read(decoder, message)
            native.acknowledge(message)

    return consume_timed(fill(count), count, loop, **overrides)


def consume_cumulative(count: int, size: int, **overrides: Any) -> float:
    """Failover (cumulative acks are refused on Shared and Key_Shared): ``batch_receive``,
    decode each, one ``acknowledge_cumulative`` per batch."""

    def loop(consumer: pulsar.Consumer, decoder: msgspec.json.Decoder[Tick]) -> None:
        got = 0
        while got < count:
            batch = consumer.batch_receive()
            for message in batch:
                read(decoder, message)
            if batch:
                consumer.acknowledge_cumulative(batch[-1])
                got += len(batch)

    policy = pulsar.ConsumerBatchReceivePolicy(size, 0, 1)
    failover = pulsar.ConsumerType.Failover
    return consume_timed(
        fill(count), count, loop, consumer_type=failover, batch_receive_policy=policy, **overrides
    )


def consume_batches(count: int, size: int, wait_ms: int = 10, **overrides: Any) -> float:
    """``batch_receive`` (``size`` per call, waiting at most ``wait_ms``): decode, acknowledge."""
    return raw_consume_batches_loop(fill(count), count, size, wait_ms, **overrides)


def consume_listener(count: int, **overrides: Any) -> float:
    """A message listener (the client's own thread): decode, acknowledge."""
    name = fill(count)
    decoder = msgspec.json.Decoder(Tick)
    client = pulsar.Client(URL)
    done = threading.Event()
    seen = [0]

    def listener(consumer: pulsar.Consumer, message: pulsar.Message) -> None:
        read(decoder, message)
        consumer.acknowledge(message)
        seen[0] += 1
        if seen[0] == count:
            done.set()

    config = {**SUBSCRIPTION, "message_listener": listener, **overrides}
    began = time.perf_counter()
    consumer = client.subscribe(full(name), f"cfg-{uuid.uuid4().hex[:6]}", **config)
    assert done.wait(120)
    elapsed = time.perf_counter() - began
    consumer.close()
    client.close()
    return count / elapsed


async def consume_asyncio(count: int) -> float:
    """``pulsar.asyncio``: ``await receive()``, decode, ``await acknowledge``."""
    return await raw_consume_asyncio_loop(await asyncio.to_thread(fill, count), count)


def threaded(fn: Callable[..., float], *args: Any, **kwargs: Any) -> Run:
    return lambda count: asyncio.to_thread(fn, count, *args, **kwargs)


EMIT: dict[str, Run] = {
    "pulsar.asyncio, windows of 1,000": lambda n: emit_asyncio(n, 1000),
    "pulsar.asyncio, windows of 5,000": lambda n: emit_asyncio(n, 5000),
    "send_async, delay 5 ms": threaded(emit_callbacks),
    "send_async, delay 1 ms": threaded(emit_callbacks, batching_max_publish_delay_ms=1),
    "send_async, delay 10 ms": threaded(emit_callbacks, batching_max_publish_delay_ms=10),
    "send_async, batches of 5,000 / 1 MB": threaded(
        emit_callbacks, batching_max_messages=5000, batching_max_allowed_size_in_bytes=1 << 20
    ),
    "send_async, block_if_queue_full, queue 1,000": threaded(
        emit_callbacks,
        block_if_queue_full=True,
        max_pending_messages=1000,
        max_pending_messages_across_partitions=1000,
    ),
    "send_async, binding objects": threaded(emit_binding),
    "send_async, no batching": threaded(emit_callbacks, batching_enabled=False),
    "send_async, block_if_queue_full, queue 5,000": threaded(
        emit_callbacks,
        block_if_queue_full=True,
        max_pending_messages=5000,
        max_pending_messages_across_partitions=5000,
    ),
}
CONSUME: dict[str, Run] = {
    "pulsar.asyncio receive": consume_asyncio,
    "receive thread, queue 1,000": threaded(consume_receive),
    "receive thread, queue 5,000": threaded(consume_receive, receiver_queue_size=5000),
    "receive thread, queue 10,000": threaded(consume_receive, receiver_queue_size=10000),
    "receive thread, binding objects": threaded(consume_receive_binding),
    "batch_receive 100 / 1 ms, queue 1,000": threaded(consume_batches, 100, 1),
    "batch_receive 500 / 1 ms, queue 1,000": threaded(consume_batches, 500, 1),
    "Failover, batch_receive 500 / 1 ms, cumulative": threaded(consume_cumulative, 500),
    "batch_receive 500, queue 1,000": threaded(consume_batches, 500),
    "batch_receive 1,000, queue 5,000": threaded(consume_batches, 1000, receiver_queue_size=5000),
    "listener, queue 1,000": threaded(consume_listener),
    "listener, queue 5,000": threaded(consume_listener, receiver_queue_size=5000),
}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("emit", "consume"))
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="parts of names to run, separated by |")
    args = parser.parse_args()
    table = EMIT if args.what == "emit" else CONSUME
    if args.only:
        parts = args.only.split("|")
        table = {name: run for name, run in table.items() if any(p in name for p in parts)}
    rates: dict[str, list[float]] = {name: [] for name in table}
    for _ in range(args.rounds):
        for name, run in table.items():
            rates[name].append(await run(args.count))
    for name, found in rates.items():
        spread = f"{min(found):,.0f}..{max(found):,.0f}"
        print(f"{name:<46} median {statistics.median(found):>9,.0f}/s  ({spread})")


if __name__ == "__main__":
    asyncio.run(main())
