"""CPU time per message of the STAN driver's receive path alone, on the event loop, without
a server: MsgProto frames as the server sends them (a sealed event's Go envelope, the
timestamp, growing sequences) are handed to the member as nats-py hands them over, then
``fetch``, ack, ``settle`` (the Acks written into a client that sends nothing). The garbage
collector is off and the best of the rounds is kept: a deterministic A/B of driver changes
(run it with ``PYTHONPATH`` pointing at each tree), where the end-to-end figures move 2x
with the machine's load. Run by hand (not part of ``make bench``):

    python benchmarks/_stan_driver_cpu.py [--messages 5000] [--fetch 256] [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import time

from _harness import sealed
from nats.aio.client import Client as NatsClient

from hexa_event.driver import SubscriptionSpec
from hexa_event.drivers.stan.consumer import StanSubscription
from hexa_event.drivers.stan.options import StanOptions
from hexa_event.drivers.stan.protocol import MsgProto, encode_body
from hexa_event.drivers.stan.session import StanSession
from hexa_event.drivers.stan.writes import pub_head


class _QuietClient(NatsClient):
    """A connected-looking nats-py client whose writes go nowhere."""

    def __init__(self) -> None:
        super().__init__()
        self._status = NatsClient.CONNECTED
        self.written = 0

    async def _send_command(self, cmd: bytes, priority: bool = False) -> None:
        self.written += len(cmd)


def _frames(count: int, first: int) -> list[bytes]:
    out = []
    for n, record in enumerate(sealed("orders", count, lambda n: {"n": n, "pad": "x" * 100})):
        proto = MsgProto(
            sequence=first + n,
            subject="orders",
            data=encode_body(record.key, record.headers, record.body),
            timestamp=time.time_ns(),
        )
        out.append(proto.encode())
    return out


async def _round(frames: list[bytes], fetch: int) -> float:
    nc = _QuietClient()
    session = StanSession(StanOptions(cluster_id="c", client_id="bench"), nc)
    sub = StanSubscription(session, SubscriptionSpec(group="g", channels=("orders",)))
    [member] = sub.members
    member.ack_inbox = "_STAN.ack.x"
    member.ack_command = pub_head(member.ack_inbox)
    handle = member._on_message
    awaited = inspect.iscoroutinefunction(handle)
    began = time.thread_time()
    done = 0
    for first in range(0, len(frames), fetch):
        for frame in frames[first : first + fetch]:
            if awaited:
                await handle(frame)
            else:
                handle(frame)
        while done < first + len(frames[first : first + fetch]):
            deliveries = await sub.fetch(fetch)
            for delivery in deliveries:
                delivery.ack()
            await sub.settle(deliveries)
            done += len(deliveries)
    took = time.thread_time() - began
    assert not member.held and nc.written
    return took


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--fetch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--first", type=int, default=1_000_000, help="the first sequence")
    args = parser.parse_args()
    frames = _frames(args.messages, args.first)
    gc.disable()
    best = min([await _round(frames, args.fetch) for _ in range(args.rounds)])
    print(f"receive, fetch, ack, settle: {best / args.messages * 1e6:.3f} µs CPU per message")


if __name__ == "__main__":
    asyncio.run(main())
