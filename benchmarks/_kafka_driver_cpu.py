"""CPU time per record of the Kafka driver's receive path alone, on the event loop, without
a broker: confluent-kafka messages built in process (a sealed event's 8 headers, 200-byte
body, runs of one partition as ``consume`` returns them) go through ``on_messages``, then
``fetch_records`` (or ``fetch``), ack, ``settle_records`` (or ``settle``). The garbage
collector is off and the best of the rounds is kept: a deterministic A/B of driver changes
(run it with ``PYTHONPATH`` pointing at each tree), where the end-to-end measures move 2x
with the machine's load. Also counts the objects the garbage collector tracks per buffered
record. Run by hand (not part of ``make bench``):

    python benchmarks/_kafka_driver_cpu.py [--records 5000] [--run 500] [--fetch 500]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from typing import Any

import confluent_kafka
from _harness import sealed

from hexa_event.driver import SubscriptionSpec
from hexa_event.drivers.kafka.consumer import KafkaSubscription
from hexa_event.drivers.kafka.offsets import PartitionState
from hexa_event.drivers.kafka.options import KafkaOptions

PARTITIONS = 3


class _Room:
    def clear(self) -> None:
        pass

    def set(self) -> None:
        pass

    def is_set(self) -> bool:
        return True


class _Member:
    abandoned = False
    room = _Room()

    def on_error(self, error: Any) -> None:
        del error

    def clear_error(self) -> None:
        pass


def _messages(count: int, run: int) -> list[Any]:
    return [
        confluent_kafka.Message(
            topic="t",
            partition=(n // run) % PARTITIONS,
            offset=n,
            key=record.key.encode(),
            value=record.body,
            headers=list(record.headers.items()),
        )
        for n, record in enumerate(sealed("t", count, lambda n: {"n": n, "pad": "x" * 180}))
    ]


def _subscription(member: _Member, prefetch: int) -> KafkaSubscription:
    spec = SubscriptionSpec(group="g", channels=("t",), prefetch=prefetch)
    sub = KafkaSubscription(KafkaOptions(bootstrap_servers="127.0.0.1:1"), spec, None)
    sub._loop = asyncio.get_running_loop()
    sub._commit_timer = asyncio.get_running_loop().call_later(3600, print)  # no commits
    sub._members = [member]  # type: ignore[list-item]
    sub._buffer_high = 1 << 60
    for number in range(PARTITIONS):
        sub._partitions[("t", number)] = PartitionState(("t", number), member, 0)
    return sub


async def _round(messages: list[Any], fetch: int, batches: bool) -> float:
    member = _Member()
    sub = _subscription(member, max(fetch, 1))
    began = time.thread_time()
    for first in range(0, len(messages), 500):
        sub.on_messages(member, messages[first : first + 500])  # type: ignore[arg-type]
    done = 0
    while done < len(messages):
        if batches:
            batch = await sub.fetch_records(fetch)
            assert batch is not None
            batch.ack()
            await sub.settle_records([batch])
            done += len(batch)
        else:
            deliveries = await sub.fetch(fetch)
            for delivery in deliveries:
                delivery.ack()
            await sub.settle(deliveries)
            done += len(deliveries)
    took = time.thread_time() - began
    assert not any(s.offsets for s in sub._partitions.values())
    sub._commit_timer.cancel()  # type: ignore[union-attr]
    return took


async def _tracked(messages: list[Any]) -> float:
    """Objects the collector tracks per record waiting in the buffer."""
    member = _Member()
    sub = _subscription(member, 500)
    gc.collect()
    before = len(gc.get_objects())
    for first in range(0, len(messages), 500):
        sub.on_messages(member, messages[first : first + 500])  # type: ignore[arg-type]
    gc.collect()
    return (len(gc.get_objects()) - before) / len(messages)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--run", type=int, default=500, help="records of a partition in a row")
    parser.add_argument("--fetch", type=int, default=500, help="max_count of each fetch")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    messages = _messages(args.records, args.run)
    print(f"tracked objects per buffered record: {await _tracked(messages):.3f}")
    gc.disable()
    for batches in (True, False):
        best = min([await _round(messages, args.fetch, batches) for _ in range(args.rounds)])
        name = "fetch_records/settle_records" if batches else "fetch/settle"
        print(f"{name}: {best / args.records * 1e6:.3f} µs CPU per record (best of {args.rounds})")


if __name__ == "__main__":
    asyncio.run(main())
