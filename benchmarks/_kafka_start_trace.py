"""Where a Kafka receiver's start to its first handled event goes: a timeline per start.

A topic (3 partitions) is pre-filled once; each round starts a receiver in a new group on
it and notes, relative to ``receiver.start()``, when each startup step began and ended:
provisioning (metadata lookups, topic creation), the consumer's creation and subscribe,
the assignment callback (its committed-offsets read), the assignment reaching the loop,
the first records reaching the loop and the first handler call. The raw confluent-kafka
consumer's own timeline under the same settings (the driver's consumer configuration:
new group, cooperative-sticky, ``fetch.wait.max.ms``...) alternates with it.
librdkafka's group and fetch debug lines (``--debug``) add the protocol's side.

    python benchmarks/_kafka_start_trace.py [--rounds 7] [--debug cgrp,fetch]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import statistics
import sys
import threading
import time
import uuid
from typing import Any

from _kafka import BOOTSTRAP, fill_sealed
from confluent_kafka import Consumer, TopicPartition

import hexa_event as he
from hexa_event.drivers.kafka import consumer as kconsumer
from hexa_event.drivers.kafka import driver as kdriver
from hexa_event.drivers.kafka import member as kmember

_T0 = 0.0
_EVENTS: list[tuple[float, str]] = []
_LOCK = threading.Lock()


def note(label: str) -> None:
    """Record ``label`` at the time since the round began (any thread)."""
    with _LOCK:
        _EVENTS.append((time.perf_counter() - _T0, label))


def traced(owner: Any, name: str, label: str | None = None) -> None:
    """Wrap ``owner.name`` (sync or async) to note its begin and end."""
    original = getattr(owner, name)
    label = label or f"{owner.__name__}.{name}"
    if asyncio.iscoroutinefunction(original):

        @functools.wraps(original)
        async def wrapper_async(*args: Any, **kwargs: Any) -> Any:
            note(f"> {label}")
            try:
                return await original(*args, **kwargs)
            finally:
                note(f"< {label}")

        setattr(owner, name, wrapper_async)
    else:

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            note(f"> {label}")
            try:
                return original(*args, **kwargs)
            finally:
                note(f"< {label}")

        setattr(owner, name, wrapper)


class _Consumer(Consumer):  # type: ignore[misc]
    """confluent-kafka's consumer with its round trips noted (``committed`` and
    ``list_topics`` are traced by :func:`instrument`)."""

    def incremental_assign(self, *args: Any, **kwargs: Any) -> Any:
        note("Consumer.incremental_assign")
        return super().incremental_assign(*args, **kwargs)

    def assign(self, *args: Any, **kwargs: Any) -> Any:
        note("Consumer.assign")
        return super().assign(*args, **kwargs)


def instrument() -> None:
    traced(_Consumer, "committed", "Consumer.committed")
    traced(_Consumer, "list_topics", "Consumer.list_topics")
    kmember.Consumer = _Consumer  # type: ignore[misc]
    traced(kdriver.KafkaDriver, "provision")
    traced(kdriver.KafkaDriver, "topic_partitions")
    traced(kdriver.KafkaDriver, "create_channels")
    traced(kdriver.KafkaDriver, "_topic_requests")
    traced(kdriver.KafkaDriver, "_wait_visible")
    traced(kdriver.KafkaDriver, "_admin_client")
    traced(kdriver.KafkaDriver, "subscribe")
    traced(kconsumer.KafkaSubscription, "start")
    traced(kmember.Member, "start")
    traced(kmember.Member, "_on_assign")
    traced(kmember.Member, "_fallback")
    traced(kconsumer.KafkaSubscription, "on_assigned")
    original = kconsumer.KafkaSubscription.on_messages
    first_batch: set[int] = set()

    def on_messages(self: Any, member: Any, messages: list[Any]) -> None:
        if id(self) not in first_batch:
            first_batch.add(id(self))
            note(f"first records on the loop ({len(messages)})")
        original(self, member, messages)

    kconsumer.KafkaSubscription.on_messages = on_messages  # type: ignore[method-assign]
    from hexa_event.drivers.kafka import producer as kproducer

    traced(kproducer.KafkaProducer, "learn")


class _Stamp(logging.Handler):
    """librdkafka's debug lines as timeline entries."""

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        note("rdk " + text[:160])


def fill(count: int) -> str:
    return fill_sealed("start-trace", count, lambda n: {"n": n})


async def ours(
    topic: str, client_config: dict[str, Any], concurrency: int = 256
) -> list[tuple[float, str]]:
    global _T0
    connection = he.connect(f"kafka://{BOOTSTRAP}", client_config=client_config)
    receiver = connection.receiver("trace", concurrency=concurrency)
    first = asyncio.Event()

    @receiver.subscribe(topic, action=f"trace-{uuid.uuid4().hex[:8]}")
    async def handle(ctx: he.Context, msg: he.Message[Any]) -> None:
        if not first.is_set():
            note("first handler call")
            first.set()

    _EVENTS.clear()
    _T0 = time.perf_counter()
    note("receiver.start()")
    try:
        await receiver.start()
        note("receiver.start() returned")
        await asyncio.wait_for(first.wait(), 30)
    finally:
        events = list(_EVENTS)
        await receiver.close()
        await connection.close()
    return events


def raw(
    topic: str, client_config: dict[str, Any], explicit: bool = False
) -> list[tuple[float, str]]:
    """The raw consumer with the driver's consumer settings (``client_config`` on top), a
    new group; ``explicit``: assign from the committed offsets read in the callback, as the
    driver does (else librdkafka looks them up and resets itself)."""
    global _T0
    client_config = dict(client_config)
    assignment = client_config.pop("partition.assignment.strategy", "cooperative-sticky")
    options = he.drivers.kafka.options.KafkaOptions(client_config=client_config)
    sub = he.drivers.kafka.options.KafkaSubscriptionOptions(assignment=assignment)
    config = options.consumer(f"raw-trace-{uuid.uuid4().hex[:8]}", "earliest", sub)
    _EVENTS.clear()
    _T0 = time.perf_counter()
    note("Consumer()")
    consumer = Consumer(config)
    eager = assignment != "cooperative-sticky"

    def on_assign(c: Any, partitions: list[Any]) -> None:
        note("on_assign")
        if explicit:
            committed = c.committed(partitions, timeout=10)
            partitions = [
                TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else -2)
                for tp in committed
            ]
            note("committed read")
        if eager:
            c.assign(partitions)
        else:
            c.incremental_assign(partitions)

    consumer.subscribe([topic], on_assign=on_assign)
    note("subscribed")
    try:
        while True:
            message = consumer.poll(0.1)
            if message is not None and message.error() is None:
                note("first record")
                break
    finally:
        events = list(_EVENTS)
        consumer.close()
    return events


def key_times(events: list[tuple[float, str]]) -> dict[str, float]:
    """The first time of each label."""
    out: dict[str, float] = {}
    for at, label in events:
        if not label.startswith("rdk "):
            out.setdefault(label, at)
    return out


def show(title: str, events: list[tuple[float, str]]) -> None:
    print(f"\n{title}")
    for at, label in events:
        print(f"  {at * 1000:8.1f} ms  {label}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--debug", default="", help="librdkafka debug contexts, e.g. cgrp,fetch")
    parser.add_argument("--show", type=int, default=1, help="timelines printed in full")
    parser.add_argument("--no-raw", action="store_true")
    parser.add_argument(
        "--concurrency", type=int, default=256, help="the receiver's (faststream_kafka.py's)"
    )
    parser.add_argument(
        "--variants",
        default="",
        help="raw consumer only, settings against the driver's: 'name:key=value,key=value;...'",
    )
    args = parser.parse_args()
    instrument()
    client_config: dict[str, Any] = {}
    if args.debug:
        client_config["debug"] = args.debug
        rdk = logging.getLogger("hexa_event.drivers.kafka.librdkafka")
        rdk.filters.clear()
        rdk.addHandler(_Stamp())
        rdk.setLevel(logging.DEBUG)
        rdk.propagate = False
    topic = await asyncio.to_thread(fill, args.count)
    if args.variants:
        await variants(topic, client_config, args)
        return
    ours_runs: list[dict[str, float]] = []
    raw_runs: list[dict[str, float]] = []
    for number in range(args.rounds):
        if not args.no_raw:
            events = await asyncio.to_thread(raw, topic, client_config)
            raw_runs.append(key_times(events))
            if number < args.show:
                show(f"raw confluent-kafka, round {number + 1}", events)
        events = await ours(topic, client_config, args.concurrency)
        ours_runs.append(key_times(events))
        if number < args.show:
            show(f"hexa-event receiver, round {number + 1}", events)
    summarise("raw confluent-kafka", raw_runs)
    summarise("hexa-event receiver", ours_runs)


async def variants(topic: str, base: dict[str, Any], args: argparse.Namespace) -> None:
    """The raw consumer under each variant of settings, rounds alternating."""
    chosen: dict[str, tuple[dict[str, Any], bool]] = {"driver settings": ({}, False)}
    for part in args.variants.split(";"):
        name, _, settings = part.partition(":")
        config: dict[str, Any] = {}
        explicit = False
        for pair in filter(None, settings.split(",")):
            key, _, value = pair.partition("=")
            if key == "explicit":
                explicit = True
            else:
                config[key] = value
        chosen[name] = (config, explicit)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in chosen}
    for _ in range(args.rounds):
        for name, (config, explicit) in chosen.items():
            events = await asyncio.to_thread(raw, topic, {**base, **config}, explicit)
            runs[name].append(key_times(events))
    for name, results in runs.items():
        summarise(f"raw, {name} {chosen[name]}", results)


def summarise(title: str, runs: list[dict[str, float]]) -> None:
    if not runs:
        return
    labels: list[str] = []
    for run in runs:
        for label in sorted(run, key=run.__getitem__):
            if label not in labels:
                labels.append(label)

    def order(label: str) -> float:
        return statistics.median(r[label] for r in runs if label in r)

    print(f"\n{title}: medians of {len(runs)} starts (ms since start)")
    for label in sorted(labels, key=order):
        values = [r[label] * 1000 for r in runs if label in r]
        print(
            f"  {statistics.median(values):8.1f}  (min {min(values):7.1f} max {max(values):7.1f})"
            f"  {label}"
        )


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
