"""CPU time (and, under callgrind, instructions) per event of a Kafka batch handler's
event-loop work alone, without a broker: a real receiver with ``kafka_batch.py``'s handler
(``Batch(max_size=500)``, typed decode) over the real Kafka subscription, fed in process
with confluent-kafka messages (a sealed event's 8 headers, their names new strings for each
record as the client makes them, 200-byte body, 64 keys, runs of one partition as
``consume`` returns them) by a stand-in for the consumer thread. What the
loop does per event here is what it does against a broker (the driver's ``on_messages``,
record batches, the core's opening, the handler, settling, deallocation, the collector),
without librdkafka's threads and the machine's other work: a steady A/B of batch-path
changes (run it with ``PYTHONPATH`` pointing at each tree). Messages are built before the
clock starts and frozen out of the collector's sight (``gc.freeze()``), as a service's
startup objects are under ``hexa-event run``. Run by hand (not part of ``make bench``):

    python benchmarks/_kafka_batch_loop.py [--count 30000] [--rounds 5]

Under ``valgrind --tool=callgrind``, the instructions of the events alone are the total of
a ``--rounds 1 --count 40000`` run minus a ``--count 10000`` run, over 30,000.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Sequence
from typing import Any

import confluent_kafka
from faststream_kafka import Order, order

import hexa_event as he
from hexa_event.driver import Driver, Features, RawRecord, Subscription, SubscriptionSpec
from hexa_event.drivers.kafka.consumer import KafkaSubscription
from hexa_event.drivers.kafka.offsets import PartitionState
from hexa_event.drivers.kafka.options import KafkaOptions

PARTITIONS = 3
KEYS = 64
CONSUMED = 500
SIZE = 500
"""Records per ``consume`` call of the stand-in thread (the member's ``_CONSUME_BATCH``)."""


class _Room:
    """A member's ``room`` (a ``threading.Event`` in the driver) as an asyncio event."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.event.set()

    def clear(self) -> None:
        self.event.clear()

    def set(self) -> None:
        self.event.set()

    def is_set(self) -> bool:
        return self.event.is_set()


class _Member:
    abandoned = False
    lag = None
    last_error = None
    replacing = None

    def __init__(self) -> None:
        self.room = _Room()
        self.assigned_once = asyncio.Event()
        self.assigned_once.set()

    def on_error(self, error: Any) -> None:
        del error

    def clear_error(self) -> None:
        pass

    def problem(self, margin: float) -> str | None:
        del margin
        return None


class _Subscription(KafkaSubscription):
    """The driver's subscription, its partitions held by a stand-in member."""

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.member = _Member()
        self._members = [self.member]  # type: ignore[list-item]
        self._commit_timer = loop.call_later(3600, print)  # no commits: no broker
        for number in range(PARTITIONS):
            key = ("t", number)
            self._partitions[key] = PartitionState(key, self.member, 0)  # type: ignore[arg-type]

    async def lag(self) -> None:
        return None

    async def close(self) -> None:
        self._closed = True
        self._buffer.close()
        if self._commit_timer is not None:
            self._commit_timer.cancel()

    async def feed(self, chunks: list[list[Any]]) -> None:
        """What the member's thread does: hand over a consume call's records while the
        buffer has room."""
        room = self.member.room.event
        chunks.reverse()
        while chunks:
            await room.wait()
            self.on_messages(self.member, chunks.pop())  # type: ignore[arg-type]
            await asyncio.sleep(0)


class _Driver(Driver):
    features = Features(name="kafka", persistent=True)

    def __init__(self) -> None:
        self.subscription: _Subscription | None = None

    async def publish(self, records: Sequence[RawRecord]) -> None:
        raise AssertionError("nothing is published")

    async def subscribe(self, spec: SubscriptionSpec) -> Subscription:
        self.subscription = _Subscription(KafkaOptions(bootstrap_servers="127.0.0.1:1"), spec, None)
        await self.subscription.start()
        return self.subscription

    async def close(self) -> None:
        pass


def messages(count: int) -> list[list[Any]]:
    """``count`` records as consume calls return them: runs of one partition."""
    envelope = he.envelope.Envelope()
    ctx = he.Context(correlation_id="bench")
    offsets = [0] * PARTITIONS
    out: list[list[Any]] = []
    for first in range(0, count, CONSUMED):
        number = (first // CONSUMED) % PARTITIONS
        chunk = []
        for n in range(first, min(count, first + CONSUMED)):
            record = envelope.seal(he.Event("t", f"k{n % KEYS}", order(n)), ctx)
            headers = dict(record.headers)  # emitted in bursts: 50 events per millisecond
            headers[he.envelope.EVENT_TIME] = b"%d" % (1_700_000_000_000 + n // 50)
            chunk.append(
                confluent_kafka.Message(
                    topic="t",
                    partition=number,
                    offset=offsets[number],
                    key=record.key.encode(),
                    value=record.body,
                    # new name strings for every record, as the client makes them
                    headers=[(name.encode().decode(), value) for name, value in headers.items()],
                    timestamp=(1, 1_700_000_000_000 + n),
                )
            )
            offsets[number] += 1
        out.append(chunk)
    return out


async def one_round(count: int, profiler: Any = None) -> tuple[float, int]:
    """Loop-thread CPU seconds for ``count`` events, and the young collections run."""
    chunks = messages(count)
    gc.collect()
    gc.freeze()
    driver = _Driver()
    receiver = he.Receiver(driver, name="bench", lag_interval=3600.0)
    done = asyncio.Event()
    seen = 0

    @receiver.subscribe("t", action="bench-batch", payload=Order, batch=he.Batch(SIZE, 0.05))
    async def handle(ctx: he.Context, msgs: list[he.Message[Order]]) -> None:
        nonlocal seen
        seen += len(msgs)
        if seen >= count:
            done.set()

    await receiver.start()
    assert driver.subscription is not None
    young = gc.get_stats()[0]["collections"]
    if profiler is not None:
        profiler.enable()
    began = time.thread_time()
    feeding = asyncio.create_task(driver.subscription.feed(chunks))
    await done.wait()
    took = time.thread_time() - began
    if profiler is not None:
        profiler.disable()
    young = gc.get_stats()[0]["collections"] - young
    await feeding
    await receiver.close()
    gc.unfreeze()
    return took, young


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions")
    parser.add_argument(
        "--build-only", action="store_true", help="only build the messages (callgrind's baseline)"
    )
    args = parser.parse_args()
    if args.build_only:
        messages(args.count)
        return
    if args.profile:
        import sys

        here = [p for p in sys.path if p.rstrip("/").endswith("benchmarks")]
        for p in here:  # its profile.py would shadow the stdlib's, which cProfile imports
            sys.path.remove(p)
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        await one_round(args.count, profiler)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(35)
        return
    took: list[float] = []
    for number in range(1, args.rounds + 1):
        seconds, young = await one_round(args.count)
        took.append(seconds / args.count * 1e6)
        print(f"  round {number}: {took[-1]:.2f} µs loop CPU/event, {young} young collections")
    print(f"median {statistics.median(took):.2f} µs, best {min(took):.2f} µs loop CPU per event")


if __name__ == "__main__":
    asyncio.run(main())
