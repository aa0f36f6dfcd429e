"""The Kafka driver passes the whole conformance suite against the real broker."""

from __future__ import annotations

import asyncio
import os

import pytest
from confluent_kafka.admin import AdminClient

import hexa_event
from hexa_event.connect import Connection
from hexa_event.driver import Driver
from hexa_event.testing.conformance import DriverConformance
from hexa_event_services import require_service

pytestmark = pytest.mark.kafka


def bootstrap() -> str:
    return os.environ.get("HEXA_KAFKA_BOOTSTRAP", "127.0.0.1:9092")


class TestKafkaConformance(DriverConformance):
    timeout = 60.0

    def setup_method(self) -> None:
        require_service("kafka")

    async def new_driver(self) -> Driver:
        return hexa_event.connect(f"kafka://{bootstrap()}", partitions=3, assignment_timeout=20)

    async def channel_exists(self, conn: Connection, channel: str) -> bool | None:
        admin = AdminClient({"bootstrap.servers": bootstrap()})
        topics = await asyncio.to_thread(lambda: admin.list_topics(timeout=10).topics)
        return channel in topics
