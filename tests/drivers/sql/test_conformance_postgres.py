"""The SQL driver on PostgreSQL passes the conformance suite."""

import pytest

import hexa_event
from hexa_event.driver import Driver
from hexa_event.testing.conformance import DriverConformance
from hexa_event_services import require_service

pytestmark = pytest.mark.postgres


class TestPostgresConformance(DriverConformance):
    timeout = 20.0

    def setup_method(self) -> None:
        self.url = require_service("postgres").url

    async def new_driver(self) -> Driver:
        return hexa_event.connect(self.url, lease_ttl=3.0, heartbeat_interval=0.2)
