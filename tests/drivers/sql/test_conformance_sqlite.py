"""The SQL driver on a SQLite file passes the conformance suite."""

import tempfile
from pathlib import Path

import hexa_event
from hexa_event.driver import Driver
from hexa_event.testing.conformance import DriverConformance

FAST = {"lease_ttl": 3.0, "heartbeat_interval": 0.2}


class TestSqliteConformance(DriverConformance):
    timeout = 20.0

    def setup_method(self) -> None:
        self.url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='hexa-sql-')) / 'events.db'}"

    async def new_driver(self) -> Driver:
        return hexa_event.connect(self.url, **FAST)
