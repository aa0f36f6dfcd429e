"""The Pulsar driver passes the whole conformance suite against the real broker."""

from __future__ import annotations

import asyncio

import pytest

import hexa_event
import hexa_event_services as services
from hexa_event.connect import Connection
from hexa_event.driver import Driver
from hexa_event.drivers.pulsar import PulsarOptions, PulsarSubscriptionOptions, SubscriptionType
from hexa_event.drivers.pulsar.admin import PulsarAdmin
from hexa_event.testing.conformance import DriverConformance

pytestmark = pytest.mark.pulsar


class TestPulsarConformance(DriverConformance):
    timeout = 60.0

    def setup_method(self) -> None:
        services.require_service("pulsar")

    def exclusive_options(self) -> object:
        return PulsarSubscriptionOptions(type=SubscriptionType.EXCLUSIVE)

    async def new_driver(self) -> Driver:
        return hexa_event.connect(
            services.env("HEXA_PULSAR_URL"), admin_url=services.env("HEXA_PULSAR_ADMIN_URL")
        )

    async def channel_exists(self, conn: Connection, channel: str) -> bool | None:
        admin = PulsarAdmin(
            PulsarOptions.from_url(
                services.env("HEXA_PULSAR_URL"), admin_url=services.env("HEXA_PULSAR_ADMIN_URL")
            )
        )
        return channel in await asyncio.to_thread(admin.channels)
