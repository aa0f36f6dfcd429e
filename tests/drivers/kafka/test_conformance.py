"""The Kafka driver passes the whole conformance suite against the real broker."""

from __future__ import annotations

import pytest

import hexa_event
from hexa_event.driver import Driver
from hexa_event.testing.conformance import DriverConformance
from hexa_event.testing.services import require_service

from .conftest import bootstrap

pytestmark = pytest.mark.kafka


class TestKafkaConformance(DriverConformance):
    timeout = 60.0

    def setup_method(self) -> None:
        require_service("kafka")

    async def new_driver(self) -> Driver:
        return hexa_event.connect(f"kafka://{bootstrap()}", partitions=3, assignment_timeout=20)
