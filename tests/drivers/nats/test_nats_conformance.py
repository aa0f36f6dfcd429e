"""The JetStream driver passes the whole conformance suite against the real server, both
unpartitioned (the default layout) and with partitions leased among an action's members
(which adds the cross-process key-order checks: ``Features.ordered_per_key``)."""

from __future__ import annotations

import pytest
from nats_helpers import PARTITIONED_OPTIONS, TEST_OPTIONS, nats_url

import hexa_event
from hexa_event.driver import Driver
from hexa_event.testing.conformance import DriverConformance
from hexa_event_services import require_service

pytestmark = pytest.mark.nats


class TestNatsConformance(DriverConformance):
    timeout = 60.0

    def setup_method(self) -> None:
        require_service("nats")

    async def new_driver(self) -> Driver:
        return hexa_event.connect(nats_url(), **TEST_OPTIONS)


class TestNatsPartitionedConformance(DriverConformance):
    timeout = 60.0

    def setup_method(self) -> None:
        require_service("nats")

    async def new_driver(self) -> Driver:
        return hexa_event.connect(nats_url(), **PARTITIONED_OPTIONS)
