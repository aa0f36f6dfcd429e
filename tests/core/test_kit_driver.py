"""The publish template of ``hexa_event.drivers.kit.driver.KitDriver`` (closed check, record
checks, the engine's refusals, one-time provisioning in one cache, then send) and the one
shape of ``from_url`` every driver shares."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest

import hexa_event as he
from hexa_event.driver import Features, Finding, RawRecord, Subscription, SubscriptionSpec
from hexa_event.drivers.kafka import KafkaOptions
from hexa_event.drivers.kit.driver import KitDriver
from hexa_event.drivers.memory import MemoryDriver
from hexa_event.drivers.memory.options import MemoryOptions
from hexa_event.drivers.nats import NatsOptions
from hexa_event.drivers.pulsar import PulsarOptions
from hexa_event.drivers.sql import SqlOptions
from hexa_event.drivers.stan import StanOptions
from hexa_event.errors import (
    ChannelNotFoundError,
    ClosedError,
    ConfigurationError,
    InvalidEventError,
)


class Recorder(KitDriver):
    """A driver that records what the template hands its hooks."""

    features = Features(name="recorder", persistent=False)

    def __init__(self) -> None:
        super().__init__()
        self.created: list[list[str]] = []
        self.sent: list[list[str]] = []
        self.missing: set[str] = set()
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()

    def validate(self, records: Sequence[RawRecord]) -> None:
        for record in records:
            if record.channel.startswith("bad"):
                raise InvalidEventError("channel", "refused by the engine")

    async def create_channels(self, channels: Sequence[str]) -> Mapping[str, int]:
        self.created.append(list(channels))
        self.entered.set()
        await self.gate.wait()
        gone = self.missing.intersection(channels)
        if gone:
            raise ChannelNotFoundError(sorted(gone)[0], "create it")
        return dict.fromkeys(channels, 3)

    async def send(self, records: Sequence[RawRecord]) -> None:
        self.sent.append([r.channel for r in records])

    async def subscribe(self, spec: SubscriptionSpec) -> Subscription:
        raise NotImplementedError

    async def close(self) -> None:
        self.closed = True


def record(channel: str) -> RawRecord:
    return RawRecord(channel, "k", {}, b"x")


async def test_channels_are_provisioned_once_then_sent() -> None:
    driver = Recorder()
    await driver.publish([record("a"), record("b"), record("a")])
    await driver.publish([record("a"), record("b")])
    await driver.provision(["b", "c"])
    assert driver.created == [["a", "b"], ["c"]]
    assert driver.sent == [["a", "b", "a"], ["a", "b"]]
    assert driver.channels == {"a": 3, "b": 3, "c": 3}


async def test_concurrent_first_publishes_share_one_provisioning() -> None:
    driver = Recorder()
    driver.gate.clear()
    publishes = [asyncio.create_task(driver.publish([record("a")])) for _ in range(5)]
    await driver.entered.wait()
    for _ in range(10):  # let the other publishes reach the provisioning
        await asyncio.sleep(0)
    driver.gate.set()
    await asyncio.gather(*publishes)
    assert driver.created == [["a"]]
    assert len(driver.sent) == 5


async def test_a_failed_provisioning_is_not_remembered() -> None:
    driver = Recorder()
    driver.missing = {"a"}
    with pytest.raises(ChannelNotFoundError):
        await driver.publish([record("a")])
    assert driver.sent == []
    assert driver.channels == {}
    driver.missing = set()
    await driver.publish([record("a")])
    assert driver.created == [["a"], ["a"]]


async def test_refusals_come_before_provisioning_and_nothing_is_sent() -> None:
    driver = Recorder()
    with pytest.raises(InvalidEventError, match="key"):
        await driver.publish([RawRecord("a", 1, {}, b"x")])  # type: ignore[arg-type]
    with pytest.raises(InvalidEventError, match="refused by the engine"):
        await driver.publish([record("a"), record("bad")])
    await driver.publish([])
    assert driver.created == []
    assert driver.sent == []
    await driver.close()
    with pytest.raises(ClosedError, match="recorder driver was closed"):
        await driver.publish([record("a")])
    with pytest.raises(ClosedError):
        await driver.provision(["a"])


async def test_the_default_diagnosis_is_the_check() -> None:
    driver = MemoryDriver()
    found = await driver.diagnose(["orders"], ["billing"], 1.0)
    assert found == [Finding("driver", "ok", await driver.check(1.0))]


STAN = "stan://127.0.0.1:4223?cluster_id=test-cluster"
OPTIONS = [
    ("memory://", MemoryOptions(partitions=2)),
    ("sqlite:///unused.db", SqlOptions(url="sqlite:///given.db", publish_batch=7)),
    ("kafka://127.0.0.1:9092", KafkaOptions(partitions=7)),
    ("pulsar://127.0.0.1:6650", PulsarOptions(partitions=7)),
    ("nats://127.0.0.1:4222", NatsOptions(stream="GIVEN")),
    (STAN, StanOptions(servers="nats://127.0.0.1:4223", cluster_id="given")),
]


@pytest.mark.parametrize(("url", "options"), OPTIONS, ids=lambda v: str(v)[:8])
async def test_every_driver_takes_a_ready_options_object(url: str, options: object) -> None:
    conn = he.connect(url, options=options)
    try:
        driver = conn.driver
        if isinstance(driver, MemoryDriver):
            assert driver.broker.partition_count == 2
        else:
            assert driver.options is options  # type: ignore[attr-defined]
        with pytest.raises(ConfigurationError, match="not both"):
            he.connect(url, options=options, partitions=3)
    finally:
        await conn.close()


class Closing(Recorder):
    """The close template: subscriptions first, then the engine, once."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[str] = []

    close = KitDriver.close  # the template, not the Recorder's

    async def close_engine(self) -> None:
        self.steps.append("engine")


class Member:
    def __init__(self, name: str, steps: list[str]) -> None:
        self.name, self.steps = name, steps

    async def close(self) -> None:
        self.steps.append(self.name)


async def test_close_closes_the_subscriptions_then_the_engine_once() -> None:
    driver = Closing()
    driver.subscriptions.update({Member("a", driver.steps), Member("b", driver.steps)})
    await driver.close()
    await driver.close()
    assert sorted(driver.steps[:2]) == ["a", "b"]
    assert driver.steps[2:] == ["engine"]
    assert not driver.subscriptions
    with pytest.raises(ClosedError):
        await driver.publish([record("a")])


def test_the_drivers_close_through_the_template() -> None:
    from hexa_event.drivers.kafka import KafkaDriver
    from hexa_event.drivers.nats import NatsDriver
    from hexa_event.drivers.pulsar import PulsarDriver
    from hexa_event.drivers.sql import SqlDriver

    for driver in (MemoryDriver, SqlDriver, KafkaDriver, PulsarDriver, NatsDriver):
        assert driver.close is KitDriver.close, driver.__name__
