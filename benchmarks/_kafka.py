"""Shared bits of the Kafka benchmarks: broker address, fresh topics, small events."""

from __future__ import annotations

import os
import uuid

from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

BOOTSTRAP = os.environ.get("HEXA_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
PARTITIONS = 3
KEYS = 64
VALUE = b'{"n":12345,"name":"tick","total":4200,"currency":"EUR","note":"small event"}'


def new_topic(prefix: str, partitions: int = PARTITIONS) -> str:
    """Create a fresh topic and return its name."""
    name = f"bench-{prefix}-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result()
    return name


def key(n: int) -> bytes:
    return f"k{n % KEYS}".encode()
