"""A group member in its own process, for the multi-process tests of the SQL driver.

    python _member.py URL CHANNEL GROUP OUT_FILE [HANDLE_SECONDS]

Consumes CHANNEL as GROUP through the driver contract; for each delivery appends the body
as a line to OUT_FILE (flushed, so it survives kill -9), then acks. Writes ``#parts N``
whenever the number of leased partitions changes. Exits cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import hexa_event
from hexa_event.driver import SubscriptionSpec


async def main(url: str, channel: str, group: str, out: str, handle_seconds: float) -> None:
    driver = hexa_event.connect(url, lease_ttl=3.0, heartbeat_interval=0.2).driver
    sub = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    parts = -1
    with open(out, "a", buffering=1) as fh:  # noqa: ASYNC230 - test helper, line-buffered
        fh.write("#ready\n")

        async def report() -> None:
            nonlocal parts
            while not stop.is_set():
                owned = len(sub.status().assignment)
                if owned != parts:
                    parts = owned
                    fh.write(f"#parts {owned}\n")
                await asyncio.sleep(0.05)

        reporter = asyncio.create_task(report())
        while not stop.is_set():
            fetching = asyncio.ensure_future(sub.fetch(50))
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({fetching, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not fetching.done():
                fetching.cancel()
                break
            batch = fetching.result()
            for delivery in batch:
                if handle_seconds:
                    await asyncio.sleep(handle_seconds)
                fh.write(delivery.record.body.decode() + "\n")
                delivery.ack()
                if handle_seconds:
                    await sub.settle([delivery])
            await sub.settle(batch)
        reporter.cancel()
    await sub.close()
    await driver.close()


if __name__ == "__main__":
    url, channel, group, out = sys.argv[1:5]
    seconds = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    asyncio.run(main(url, channel, group, out, seconds))
