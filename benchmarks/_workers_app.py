"""The service ``workers.py`` runs with ``hexa-event run _workers_app:build --workers N``.

Each handler burns ``BENCH_CPU`` seconds of CPU (200 µs by default). Every 0.05 s (when it
changed) and at close each process appends ``PID HANDLED FIRST LAST`` (epoch seconds of its
first and last handled event) to ``BENCH_PROGRESS``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import hexa_event as he


def _report(handled: int, first: float, last: float) -> None:
    line = f"{os.getpid()} {handled} {first:.6f} {last:.6f}\n".encode()
    fd = os.open(os.environ["BENCH_PROGRESS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


async def build() -> AsyncIterator[Any]:
    url = os.environ["BENCH_URL"]
    options = {"partitions": 4} if url.startswith("kafka") else {}
    conn = he.connect(url, **options)
    receiver = conn.receiver("bench-workers", concurrency=64)
    cpu = float(os.environ.get("BENCH_CPU", "0.0002"))
    state = {"handled": 0, "first": 0.0, "last": 0.0}

    @receiver.subscribe(os.environ["BENCH_CHANNEL"], action=os.environ["BENCH_ACTION"])
    async def handle(ctx: he.Context, msg: he.Message[Any]) -> None:
        end = time.perf_counter() + cpu
        while time.perf_counter() < end:
            pass
        now = time.time()
        state["first"] = state["first"] or now
        state["last"] = now
        state["handled"] += 1

    async def reporter() -> None:
        reported = 0
        while True:
            await asyncio.sleep(0.05)
            if state["handled"] != reported:
                reported = int(state["handled"])
                _report(reported, state["first"], state["last"])

    task = asyncio.create_task(reporter())
    yield receiver
    task.cancel()
    _report(int(state["handled"]), state["first"], state["last"])
