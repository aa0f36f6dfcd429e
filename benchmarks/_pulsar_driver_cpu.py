"""CPU time per message of the Pulsar driver's receive path on the event loop, without a
broker: pulsar-client messages built beforehand (``_pulsar.MessageBuilder``: a sealed
event's properties, key and JSON body, as the emitter writes them) are handed to a
``PulsarSubscription`` by a stand-in consumer (its ``receive`` / ``batch_receive`` give them
out, its ``acknowledge`` counts), then ``fetch(500)``, ack, ``settle``, as
``pulsar_bench.py``'s driver row does. What is timed is the loop thread's own CPU
(``time.thread_time``): building the deliveries, the window, the settle loops and the acks'
Python side. The garbage collector is off and the best of the rounds is kept: an A/B of
driver changes (run it with ``PYTHONPATH`` pointing at each tree, alternating), where the
broker-backed figures move 2x with the machine's load. Built messages are not received ones
(no batch, no message id), so the client's own cost per message is lower than on a broker;
the driver's Python is the same. Run by hand (not part of ``make bench``):

    python benchmarks/_pulsar_driver_cpu.py [--messages 20000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import threading
import time
import uuid
from collections import deque
from typing import Any

import _pulsar
import pulsar
from _harness import sealed

from hexa_event.driver import SubscriptionSpec
from hexa_event.drivers.pulsar import PulsarOptions
from hexa_event.drivers.pulsar.consumer import PulsarSubscription
from hexa_event.drivers.pulsar.options import PulsarSubscriptionOptions


def _messages(count: int) -> list[Any]:
    out = []
    for record in sealed("orders", count, lambda n: {"n": n, "name": "tick", "note": "small"}):
        builder = _pulsar.MessageBuilder()
        builder.content(record.body)
        builder.partition_key(record.key)
        builder.properties({name: value.decode() for name, value in record.headers.items()})
        out.append(builder.build())
    return out


class _Native:
    """The binding consumer's calls the receive thread and ``settle`` make."""

    def __init__(self, messages: list[Any], batch: int) -> None:
        self.pending = deque(messages)
        self.batch = batch
        self.acked = 0
        self.closed = threading.Event()

    def receive(self, timeout_ms: int) -> Any:
        try:
            return self.pending.popleft()
        except IndexError:
            self.closed.wait(timeout_ms / 1000)
            raise pulsar.Timeout() from None

    def batch_receive(self) -> list[Any]:
        pending, out = self.pending, []
        while pending and len(out) < self.batch:
            out.append(pending.popleft())
        return out

    def acknowledge(self, message: Any) -> None:
        self.acked += 1


class _Consumer:
    def __init__(self, native: _Native) -> None:
        self._consumer = native

    def is_connected(self) -> bool:
        return True

    def close(self) -> None:
        self._consumer.closed.set()


class _Client:
    def __init__(self, messages: list[Any]) -> None:
        self.messages = messages

    def subscribe(self, topic: Any, name: str, **kwargs: Any) -> _Consumer:
        batch = kwargs["batch_receive_policy"].policy().getMaxNumMessages()
        return _Consumer(_Native(self.messages, batch))


class _Admin:
    def backlog(self, channels: list[str], subscription: str) -> dict[str, int | None]:
        return {}


async def started(client: Any, spec: SubscriptionSpec) -> PulsarSubscription:
    """The driver's subscription over a stand-in ``client`` (no broker, no admin API),
    started."""
    subscription = PulsarSubscription(
        client,
        PulsarOptions(),
        spec,
        PulsarSubscriptionOptions(),
        lambda _: None,
        _Admin(),  # type: ignore[arg-type]
    )
    await subscription.start()
    return subscription


async def one_round(messages: list[Any]) -> float:
    """Loop-thread CPU seconds for receiving, acking and settling ``messages``."""
    spec = SubscriptionSpec(group=f"cpu-{uuid.uuid4().hex[:6]}", channels=("orders",))
    subscription = await started(_Client(messages), spec)
    count, done = len(messages), 0
    began = time.thread_time()
    while done < count:
        deliveries = await subscription.fetch(500)
        for delivery in deliveries:
            delivery.record.body  # noqa: B018 - read, as a handler's decode would
            delivery.ack()
        await subscription.settle(deliveries)
        done += len(deliveries)
    spent = time.thread_time() - began
    await subscription.close()
    return spent


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    messages = _messages(args.messages)
    gc.disable()
    spent = [await one_round(messages) for _ in range(args.rounds)]
    best = min(spent) / args.messages * 1e6
    print(f"loop thread CPU per message: best {best:.3f} µs (rounds: ", end="")
    print(", ".join(f"{s / args.messages * 1e6:.2f}" for s in spent) + ")")


if __name__ == "__main__":
    asyncio.run(main())
