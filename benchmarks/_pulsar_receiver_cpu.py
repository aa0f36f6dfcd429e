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

import argparse
import asyncio
import os
import statistics
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from _pulsar_driver_cpu import _Admin, _Consumer, _messages, _Native

import hexa_event as he
from hexa_event.driver import Driver, SubscriptionSpec
from hexa_event.drivers.pulsar import PulsarOptions
from hexa_event.drivers.pulsar.consumer import PulsarSubscription
from hexa_event.drivers.pulsar.driver import PulsarDriver
from hexa_event.drivers.pulsar.options import PulsarSubscriptionOptions


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
        subscription = PulsarSubscription(
            _Client(self._messages),  # type: ignore[arg-type]
            PulsarOptions(),
            spec,
            PulsarSubscriptionOptions(),
            lambda _: None,
            _Admin(),  # type: ignore[arg-type]
        )
        await subscription.start()
        return subscription

    async def close(self) -> None:
        pass


async def one_round(messages: list[Any]) -> float:
    """Event-loop CPU seconds to receive ``messages`` (start and close left out)."""
    receiver = he.Receiver(_Driver(messages), name="bench", concurrency=256, lag_interval=3600)
    done = asyncio.Event()
    seen = 0
    count = len(messages)
    began = 0.0

    @receiver.subscribe("orders", action="bench", payload=Tick)
    async def handle(ctx: he.Context, msg: he.Message[Tick]) -> None:
        nonlocal seen, began
        if seen == 0:
            began = time.thread_time()
        seen += 1
        if seen == count:
            done.set()

    await receiver.start()
    await asyncio.wait_for(done.wait(), 600)
    took = time.thread_time() - began
    await receiver.close()
    return took


async def _instrument(state: str) -> None:
    """Switch valgrind's instrumentation of this process ``on`` or ``off``."""
    command = ["callgrind_control", "-i", state, str(os.getpid())]
    await asyncio.to_thread(subprocess.run, command, check=True, capture_output=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--callgrind", action="store_true", help="one round, nothing printed")
    args = parser.parse_args()
    messages = _messages(args.count)
    if args.callgrind:
        await one_round(messages[:500])  # warm up (imports, caches)
        await _instrument("on")
        await one_round(messages)
        await _instrument("off")
        return
    await one_round(messages[: min(2000, args.count)])  # warm up (imports, caches)
    times = [await one_round(messages) / args.count * 1e6 for _ in range(args.rounds)]
    print(
        f"Pulsar receiver, no broker: {statistics.median(times):.2f} µs CPU per event (median "
        f"of {args.rounds}; {min(times):.2f}-{max(times):.2f})"
    )


if __name__ == "__main__":
    asyncio.run(main())
