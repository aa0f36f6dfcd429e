"""CPU time per event of a whole Kafka receiver without a broker: the Kafka driver's
subscription fed confluent-kafka messages built in process (``kafka_consume.py``'s events: a
sealed event's 8 headers, 64 keys, 3 partitions, runs of one partition as ``consume``
returns them), read by a ``Receiver`` (concurrency 256, as ``kafka_consume.py``) whose
handler only counts. Everything but the broker and the consumer thread: ``on_messages``,
fetch, lanes, ``Dispatcher.first``, the handler's context and message, settle. The
subscription's commits are switched off (a commit is one per 50 ms, not per event).

Prints the event-loop thread's CPU per event (median of the rounds, garbage collector on),
and with ``--callgrind`` runs one round of ``--count`` events for instruction counts, with
instrumentation on only for the round (``callgrind_control -i``): run it as ``valgrind
--tool=callgrind --instr-atstart=no`` for two counts and take the difference. Run
it with ``PYTHONPATH`` pointing at each tree, alternating, for an A/B of core changes.
Not part of ``make bench``:

    python benchmarks/_kafka_receiver_cpu.py [--count 20000] [--rounds 7] [--callgrind]
"""

from __future__ import annotations

import asyncio
from typing import Any

import confluent_kafka
from _harness import Tick, receiver_cpu, sealed
from _kafka_driver_cpu import PARTITIONS, _Member

from hexa_event.driver import Driver, Features, SubscriptionSpec, SubscriptionStatus
from hexa_event.drivers.kafka.consumer import KafkaSubscription
from hexa_event.drivers.kafka.driver import KafkaDriver
from hexa_event.drivers.kafka.offsets import PartitionState
from hexa_event.drivers.kafka.options import KafkaOptions

KEYS = 64
RUN = 500
PER_MS = 100
START_MS = 1_796_000_000_000


def messages(count: int) -> list[Any]:
    """``kafka_consume.py``'s events as confluent-kafka messages, runs of ``RUN`` records of
    one partition, their emit times those of a producer sealing ``PER_MS`` events per
    millisecond (whatever the time this process takes to build them, under valgrind too)."""
    out = []
    for n, record in enumerate(sealed("t", count, lambda n: Tick(n, "tick", 4200, "EUR", "x"))):
        emitted = START_MS + n // PER_MS
        headers = {**record.headers, "HEXA_EVENT_TIME": str(emitted).encode()}
        out.append(
            confluent_kafka.Message(
                topic="t",
                partition=(n // RUN) % PARTITIONS,
                offset=n,
                key=record.key.encode(),
                value=record.body,
                headers=list(headers.items()),
                timestamp=(confluent_kafka.TIMESTAMP_CREATE_TIME, emitted + 2),
            )
        )
    return out


class _Subscription(KafkaSubscription):
    """The driver's subscription with a stand-in member: no consumer, no commits."""

    async def close(self) -> None:
        self._closed = True
        self._buffer.close()
        if self._commit_timer is not None:
            self._commit_timer.cancel()

    async def lag(self) -> None:
        return None

    def status(self) -> SubscriptionStatus:
        return SubscriptionStatus(joined=True)


class _Driver(Driver):
    """Hands out one subscription fed ``messages``, all buffered before the receiver starts."""

    features: Features = KafkaDriver.features

    def __init__(self, records: list[Any]) -> None:
        self._records = records

    async def publish(self, records: Any) -> None:
        raise AssertionError("nothing is published in this benchmark")

    async def subscribe(self, spec: SubscriptionSpec) -> KafkaSubscription:
        loop = asyncio.get_running_loop()
        member = _Member()
        sub = _Subscription(KafkaOptions(bootstrap_servers="127.0.0.1:1"), spec, None)
        sub._loop = loop
        sub._commit_timer = loop.call_later(3600, print)  # no commits
        sub._members = [member]  # type: ignore[list-item]
        sub._buffer_high = 1 << 60
        for number in range(PARTITIONS):
            sub._partitions[("t", number)] = PartitionState(("t", number), member, 0)
        for first in range(0, len(self._records), RUN):
            sub.on_messages(member, self._records[first : first + RUN])  # type: ignore[arg-type]
        return sub

    async def close(self) -> None:
        pass


async def main() -> None:
    await receiver_cpu("receiver, no broker", __doc__.splitlines()[0], messages, _Driver, "t", Tick)


if __name__ == "__main__":
    asyncio.run(main())
