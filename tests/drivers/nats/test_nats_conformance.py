"""The JetStream driver passes the whole conformance suite against the real server."""

from __future__ import annotations

import os

import pytest

import hexa_event
from hexa_event.driver import Driver
from hexa_event.testing.conformance import DriverConformance
from hexa_event.testing.services import require_service

pytestmark = pytest.mark.nats


class TestNatsConformance(DriverConformance):
    timeout = 60.0

    def setup_method(self) -> None:
        require_service("nats")

    async def new_driver(self) -> Driver:
        return hexa_event.connect(os.environ.get("HEXA_NATS_URL", "nats://127.0.0.1:4222"))
