"""A Kafka consumer in its own process, for the kill test (run as a script).

    kafka_consumer_proc.py BOOTSTRAP CHANNEL ACTION OUT_PATH

Handles events of CHANNEL as ACTION, appending ``<event id> <key> <seq>`` to OUT_PATH for
each one (flushed, so a SIGKILL loses no line of a finished handler), until killed.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, TextIO

import hexa_event as he


async def main(bootstrap: str, channel: str, action: str, out: TextIO) -> None:
    # A short session timeout so the group notices the killed member in seconds, not 45 s.
    driver = he.connect(
        f"kafka://{bootstrap}", partitions=3, consumer_config={"session.timeout.ms": 6000}
    )
    receiver = driver.receiver("kill-test", concurrency=16)

    @receiver.subscribe(channel, action=action)
    async def handle(ctx: he.Context, msg: he.Message[Any]) -> None:
        await asyncio.sleep(0.01)  # some work, so the kill lands mid-batch
        out.write(f"{msg.id} {msg.key} {msg.payload['seq']}\n")

    await receiver.run()


if __name__ == "__main__":
    with open(sys.argv[4], "a", buffering=1) as log:
        asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], log))
