"""The memory driver passes the whole conformance suite."""

import uuid

import hexa_event
from hexa_event.driver import Driver
from hexa_event.testing.conformance import DriverConformance


class TestMemoryConformance(DriverConformance):
    timeout = 10.0

    def setup_method(self) -> None:
        self.url = f"memory://conformance-{uuid.uuid4().hex}"

    async def new_driver(self) -> Driver:
        return hexa_event.connect(self.url)
