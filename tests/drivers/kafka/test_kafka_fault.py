"""Fault test: 10,000 events emitted and consumed while Kafka restarts twice (data kept).

Every event is handled; none is lost; redeliveries carry the HEXA_EVENT_ID of the original,
so they are recognisable as duplicates.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from fault_helpers import FaultFlow, stacks_after, stacks_before_timeout
from hexa_event.drivers.kafka import KafkaDriver
from hexa_event.emitter import Emitter
from hexa_event.receiver import Receiver
from hexa_event_services import get_service, require_service

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.disruptive]


@pytest.fixture(autouse=True)
def _stacks_if_hung(request: pytest.FixtureRequest) -> Iterator[None]:
    """A hang (a consumer or close blocked in librdkafka) leaves every thread's stack."""
    with stacks_after(stacks_before_timeout(request.config, request.node)):
        yield


async def test_ten_thousand_events_survive_two_broker_restarts(kafka_bootstrap: str) -> None:
    service = require_service("kafka")
    tag = uuid.uuid4().hex[:8]
    channel, action = f"fault-{tag}", f"fault-act-{tag}"
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=3, delivery_timeout=60)
    receiver_driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=3)
    flow = FaultFlow(channel, tag)
    receiver = Receiver(receiver_driver, name="fault", drain_timeout=10)
    receiver.subscribe(channel, action=action, handler=flow.handle)

    async def restart() -> None:
        await asyncio.to_thread(get_service("kafka").restart, True)

    await driver.provision([channel])
    async with receiver:
        emitting = asyncio.create_task(flow.emit_all(Emitter(driver)))
        downtime = [
            await flow.fault_at(flow.total // 5, "restart", restart),
            await flow.fault_at(flow.total * 3 // 5, "restart", restart),
        ]
        await asyncio.wait_for(emitting, 240)
        await flow.wait_handled(flow.total, within=180)
    await driver.close()
    await receiver_driver.close()

    flow.verify()
    print(flow.summary(downtime))
    assert service.is_ready(timeout=5)
