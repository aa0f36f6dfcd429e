"""Shared bits of the Kafka benchmarks: broker address, fresh topics, filling, raw consume."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

import hexa_event as he

BOOTSTRAP = os.environ.get("HEXA_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
PARTITIONS = 3
KEYS = 64
CLIENT_LOG = logging.getLogger("bench.kafka")
"""librdkafka's lines of the benchmarks' own clients (none reach stderr)."""
VALUE = b'{"n":12345,"name":"tick","total":4200,"currency":"EUR","note":"small event"}'


def new_topic(prefix: str, partitions: int = PARTITIONS) -> str:
    """Create a fresh topic and return its name."""
    name = f"bench-{prefix}-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP, "logger": CLIENT_LOG})
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result()
    return name


def key(n: int) -> bytes:
    return f"k{n % KEYS}".encode()


def produce_all(topic: str, records: Iterable[tuple[bytes, Mapping[str, bytes], bytes]]) -> None:
    """Write (key, headers, body) records to ``topic`` and wait for every ack (not timed)."""
    producer = Producer(
        {"bootstrap.servers": BOOTSTRAP, "linger.ms": 20, "partitioner": "fnv1a_random"}
    )
    for record_key, headers, body in records:
        while True:
            try:
                producer.produce(topic, body, record_key, headers=dict(headers))
                break
            except BufferError:
                producer.poll(0.01)
    assert producer.flush(60) == 0


def fill_sealed(prefix: str, count: int, payload: Callable[[int], object]) -> str:
    """A fresh topic holding ``count`` events sealed by our envelope: event ``n`` carries
    ``payload(n)`` under the key ``k{n % KEYS}`` (the records carry our headers)."""
    topic = new_topic(prefix)
    envelope = he.envelope.Envelope()
    ctx = he.Context(correlation_id="bench")

    def records() -> Iterator[tuple[bytes, Mapping[str, bytes], bytes]]:
        for n in range(count):
            record = envelope.seal(he.Event(topic, f"k{n % KEYS}", payload(n)), ctx)
            yield record.key.encode(), record.headers, record.body

    produce_all(topic, records())
    return topic


def raw_consume(
    topic: str,
    count: int,
    decode: Callable[[bytes], object],
    config: Mapping[str, Any] | None = None,
    mark: Callable[[str], object] | None = None,
) -> float:
    """Raw confluent-kafka: ``consume(500)`` in a loop, decode each body, store offsets.

    The ack is ``store_offsets`` of each partition's next offset once per batch (librdkafka
    commits stored offsets in the background). Timed from the first record to the last one
    decoded; returns events/s. ``config``: more consumer settings; ``mark``: called with
    "start" at the first record and "end" after the last (``_kafka_threads.py``'s probe).
    """
    consumer = Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": f"raw-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.offset.store": False,
            "partition.assignment.strategy": "cooperative-sticky",
            **(config or {}),
        }
    )
    consumer.subscribe([topic])
    seen = 0
    began = None
    while seen < count:
        messages = consumer.consume(500, 1.0)
        ends: dict[tuple[str, int], int] = {}
        for msg in messages:
            if msg.error() is not None:
                continue
            if began is None:
                began = time.perf_counter()
                if mark is not None:
                    mark("start")
            decode(msg.value())  # type: ignore[arg-type]
            ends[(msg.topic(), msg.partition())] = msg.offset()  # type: ignore[index, assignment]
            seen += 1
        if ends:
            consumer.store_offsets(
                offsets=[TopicPartition(t, p, o + 1) for (t, p), o in ends.items()]
            )
    elapsed = time.perf_counter() - (began or time.perf_counter())
    if mark is not None:
        mark("end")
    consumer.close()
    return count / elapsed
