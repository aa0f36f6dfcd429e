"""How fast could any Python receiver keeping our contract be? The per-event floor.

The targets of ``make bench`` are ratios to references that do almost nothing per event
(decode a body, store an offset). A receiver that keeps the contract must also, per event,
read the event's ids from its headers, build the handler's ``Message`` and ``Context``, call
the async handler, and note the settlement. This measures that minimum as a bare loop,
with no library code between the steps (no lanes, no retries, no health, no telemetry),
next to the reference in the same run, and prints the best ratio such a floor allows.

- Kafka: messages are consumed with raw confluent-kafka first (not timed); the floor loop
  then does, per message: ``headers()`` into a dict, the three id headers decoded, the body
  decoded into the dataclass, a ``Context`` and a ``Message`` built, ``await handler``,
  the offset noted. The consume itself is charged at the reference's own cost.
- Memory: per event, the emit side (an ``Event``, its body encoded, a UUIDv7, the context
  headers copied, the record built) and the receive side as above, through one asyncio queue.

    HEXA_KAFKA_BOOTSTRAP=127.0.0.1:9092 python benchmarks/floor.py [--count 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import msgspec
import uuid_utils
from _harness import Tick
from _kafka import BOOTSTRAP, VALUE, key, new_topic, produce_all, raw_consume
from confluent_kafka import Consumer

import hexa_event as he

HEADERS = he.envelope.Envelope().seal(he.Event("t", "k", {"a": 1})).headers


async def handler(ctx: he.Context, msg: he.Message[Any]) -> None:
    return None


async def floor_receive(messages: list[Any]) -> float:
    """The minimum per-message work of a contract-keeping receiver; seconds per event."""
    decode = msgspec.json.Decoder(Tick).decode
    offsets: list[int] = []
    began = time.perf_counter()
    for m in messages:
        headers = dict(m.headers() or ())
        get = headers.get
        event_id = get("HEXA_EVENT_ID", b"").decode()
        root_id = get("HEXA_ROOT_EVENT_ID", b"").decode() or event_id
        correlation = get("_ctx_correlation_id", b"").decode()
        payload = decode(m.value())
        ctx = he.Context(
            correlation_id=correlation,
            event_id=event_id,
            handler_action="a",
            root_event_id=root_id,
            root_handler_action="a",
        )
        msg: he.Message[Tick] = he.Message(
            id=event_id,
            channel=m.topic(),
            key=m.key().decode(),
            payload=payload,
            headers=MappingProxyType(headers),
            attempt=1,
            timestamp=None,
        )
        await handler(ctx, msg)
        offsets.append(m.offset())
    return (time.perf_counter() - began) / len(messages)


async def reference_work(messages: list[Any]) -> float:
    """What the raw reference does per consumed message besides consuming it."""
    decode = msgspec.json.Decoder(Tick).decode
    ends: dict[tuple[str, int], int] = {}
    began = time.perf_counter()
    for m in messages:
        decode(m.value())
        ends[(m.topic(), m.partition())] = m.offset()
    return (time.perf_counter() - began) / len(messages)


def consume_all(topic: str, count: int) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": f"floor-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    out: list[Any] = []
    while len(out) < count:
        out.extend(m for m in consumer.consume(500, 1.0) if m.error() is None)
    consumer.close()
    return out


async def kafka(count: int, rounds: int, target: float) -> None:
    topic = new_topic("floor")
    produce_all(topic, ((key(n), HEADERS, VALUE) for n in range(count)))
    messages = await asyncio.to_thread(consume_all, topic, count)
    raw_rates, floors, refs = [], [], []
    decode = msgspec.json.Decoder(Tick).decode
    for _ in range(rounds):
        raw_rates.append(await asyncio.to_thread(raw_consume, topic, count, decode))
        floors.append(await floor_receive(messages))
        refs.append(await reference_work(messages))
    raw = 1 / statistics.median(raw_rates)
    floor_work, ref_work = statistics.median(floors), statistics.median(refs)
    consume = max(raw - ref_work, 0.0)
    report("Kafka consume + ack", raw, consume + floor_work, consume, floor_work, target)


async def memory(count: int, rounds: int, target: float) -> None:
    import memory_end_to_end

    encode = msgspec.json.Encoder().encode
    decode = msgspec.json.Decoder(memory_end_to_end.Tick).decode
    context_headers = {k: v for k, v in HEADERS.items() if k.startswith("_ctx")}

    async def floor(n_events: int) -> float:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        began = time.perf_counter()
        for n in range(n_events):
            event = he.Event("ticks", f"k{n % 64}", memory_end_to_end.Tick(n, "tick"))
            headers = dict(context_headers)
            event_id = str(uuid_utils.uuid7())
            headers["HEXA_EVENT_ID"] = event_id.encode()
            headers["HEXA_EVENT_TIME"] = str(time.time_ns() // 1_000_000).encode()
            queue.put_nowait(
                he.driver.RawRecord(event.channel, event.key, headers, encode(event.payload))
            )
        while not queue.empty():
            record = queue.get_nowait()
            get = record.headers.get
            event_id = get("HEXA_EVENT_ID", b"").decode()
            root_id = get("HEXA_ROOT_EVENT_ID", b"").decode() or event_id
            correlation = get("_ctx_correlation_id", b"").decode()
            payload = decode(record.body)
            ctx = he.Context(
                correlation_id=correlation,
                event_id=event_id,
                handler_action="a",
                root_event_id=root_id,
                root_handler_action="a",
            )
            msg: he.Message[Any] = he.Message(
                id=event_id,
                channel=record.channel,
                key=record.key,
                payload=payload,
                headers=MappingProxyType(record.headers),
                attempt=1,
                timestamp=datetime.fromtimestamp(time.time(), UTC),
            )
            await handler(ctx, msg)
        return (time.perf_counter() - began) / n_events

    bare_rates, floors = [], []
    for _ in range(rounds):
        bare_rates.append(await memory_end_to_end.bare(count))
        floors.append(await floor(count))
    bare = 1 / statistics.median(bare_rates)
    floor_cost = statistics.median(floors)
    report("memory end to end", bare, floor_cost, 0.0, floor_cost, target)


def report(
    title: str, reference: float, floor: float, consume: float, work: float, target: float
) -> None:
    budget = reference / target
    print(f"\n{title}")
    print(f"  reference                       {reference * 1e6:6.2f} µs/event")
    if consume:
        print(f"    of which consuming            {consume * 1e6:6.2f} µs/event")
    print(f"  floor of a contract-keeping receiver {floor * 1e6:6.2f} µs/event", end="")
    print(f"  ({consume * 1e6:.2f} consume + {work * 1e6:.2f} minimum work)" if consume else "")
    print(f"  budget at the target ratio {target:.2f}  {budget * 1e6:6.2f} µs/event")
    print(f"  best ratio the floor allows     {reference / floor:6.2f}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--paths", default="memory,kafka")
    args = parser.parse_args()
    if "memory" in args.paths:
        await memory(min(args.count, 20_000), args.rounds, 0.3)
    if "kafka" in args.paths:
        await kafka(args.count, args.rounds, 0.5)


if __name__ == "__main__":
    asyncio.run(main())
