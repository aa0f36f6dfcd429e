"""Instructions (or CPU) per event of a whole Pulsar receiver without a broker: the Pulsar
driver's subscription fed by ``_pulsar_driver_cpu.py``'s stand-in consumer (pulsar-client
messages built beforehand), read by a ``Receiver`` (concurrency 256) whose handler only
counts. Everything but the broker: the receive thread's hand-over, the deliveries, fetch,
lanes, ``Dispatcher.first``, the handler's context and message, the settle loop and the
acks' Python side: the core's per-event delivery path on a driver without record batches.

Prints the event-loop thread's CPU per event (median of the rounds), and with
``--callgrind`` runs one round of ``--count`` events with valgrind's instrumentation on only
for the round (``callgrind_control -i``): run it as ``valgrind --tool=callgrind
--instr-atstart=no`` for two counts and take the difference. Run it with ``PYTHONPATH``
pointing at each tree, alternating, for an A/B of core changes. Not part of ``make bench``:

    python benchmarks/_pulsar_receiver_cpu.py [--count 20000] [--rounds 7] [--callgrind]
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from _harness import receiver_cpu
from _pulsar_driver_cpu import _Consumer, _messages, _Native, started

from hexa_event.driver import Driver, SubscriptionSpec
from hexa_event.drivers.pulsar.consumer import PulsarSubscription
from hexa_event.drivers.pulsar.driver import PulsarDriver


@dataclass
class Tick:
    n: int
    name: str
    note: str


class _Client:
    """Hands the messages to the consumer of ``orders`` (retry channels' get none)."""

    def __init__(self, messages: list[Any]) -> None:
        self.messages = messages

    def subscribe(self, topic: Any, name: str, **kwargs: Any) -> _Consumer:
        batch = kwargs["batch_receive_policy"].policy().getMaxNumMessages()
        given = self.messages if str(topic).endswith("/orders") else []
        return _Consumer(_Native(given, batch))


class _Driver(Driver):
    features = PulsarDriver.features

    def __init__(self, messages: list[Any]) -> None:
        self._messages = messages

    async def publish(self, records: Any) -> None:
        raise AssertionError("nothing is published in this benchmark")

    async def subscribe(self, spec: SubscriptionSpec) -> PulsarSubscription:
        return await started(_Client(self._messages), spec)

    async def close(self) -> None:
        pass


async def main() -> None:
    await receiver_cpu(
        "Pulsar receiver, no broker",
        __doc__.splitlines()[0],
        _messages,
        _Driver,
        "orders",
        Tick,
        callgrind_warm_up=500,
    )


if __name__ == "__main__":
    asyncio.run(main())
