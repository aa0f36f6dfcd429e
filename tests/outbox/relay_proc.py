"""A relay in its own process, for the fault tests (run as a script).

    relay_proc.py DB_URL SINK_PATH stall|drain LEASE_SECONDS

``stall``: publish one batch to the sink, print ``PUBLISHED`` and hang before marking it
sent (the parent SIGKILLs us there). ``drain``: relay until the backlog is 0, then exit 0.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from db_helpers import SinkDriver
from hexa_event.driver import RawRecord
from hexa_event.outbox import OutboxRelay


class StallAfterPublish(SinkDriver):
    async def publish(self, records: Sequence[RawRecord]) -> None:
        await super().publish(records)
        print(f"PUBLISHED {len(records)}", flush=True)
        await asyncio.Event().wait()  # never returns: killed between publish and mark


async def main(db: str, sink: str, mode: str, lease: float) -> int:
    driver = StallAfterPublish(sink) if mode == "stall" else SinkDriver(sink)
    relay = OutboxRelay(db, driver, batch_size=50, concurrency=1, lease=lease, poll_interval=0.1)
    if mode == "stall":
        await relay.run_once()
        return 1  # unreachable
    task = asyncio.create_task(relay.run())
    deadline = time.monotonic() + 120
    while (await relay.stats()).backlog:
        if time.monotonic() > deadline or task.done():
            return 2
        await asyncio.sleep(0.05)
    relay.stop()
    await task
    await relay.close()
    print("DRAINED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]))))
