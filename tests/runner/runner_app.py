"""The service the runner tests run in subprocesses (``hexa-event run runner_app:build``).

Configured by environment variables; every handler run appends ``start N PID T`` and
``done N PID T`` lines to the ledger file (one ``write`` on an O_APPEND file each, so lines
of several processes never interleave), which the tests read back across processes.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import hexa_event as he


def ledger(what: str, n: object) -> None:
    line = f"{what} {n} {os.getpid()} {time.time():.6f}\n".encode()
    fd = os.open(os.environ["HEXA_RUN_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def build() -> AsyncIterator[Any]:
    """One receiver on HEXA_RUN_URL; an async generator, so it closes its connection."""
    env = os.environ
    if env.get("HEXA_RUN_CRASH"):
        raise RuntimeError("this factory always fails (HEXA_RUN_CRASH)")
    gate = env.get("HEXA_RUN_GATE")
    while gate and not os.path.exists(gate):  # noqa: ASYNC110, ASYNC240 (test makes it)
        await asyncio.sleep(0.02)
    ledger("built", "-")
    lease_ttl = env.get("HEXA_RUN_LEASE_TTL")  # SqlOptions.lease_ttl, for the SQL log only
    conn = he.connect(env["HEXA_RUN_URL"], **({"lease_ttl": float(lease_ttl)} if lease_ttl else {}))
    if env.get("HEXA_RUN_TELEMETRY"):
        from hexa_event.telemetry import Telemetry

        conn = Telemetry().instrument(conn)
    receiver = conn.receiver(
        "runner-test",
        drain_timeout=float(env.get("HEXA_RUN_DRAIN", "20")),
        concurrency=int(env.get("HEXA_RUN_CONCURRENCY", "8")),
        stall_timeout=float(env.get("HEXA_RUN_STALL", "300")),
        lag_interval=float(env.get("HEXA_RUN_LAG_INTERVAL", "5")),
    )
    delay = float(env.get("HEXA_RUN_DELAY", "0"))
    cpu = float(env.get("HEXA_RUN_CPU", "0"))
    block = env.get("HEXA_RUN_BLOCK")

    @receiver.subscribe(env["HEXA_RUN_CHANNEL"], action=env["HEXA_RUN_ACTION"])
    async def handle(ctx: he.Context, msg: he.Message[Any]) -> None:
        n = msg.payload["n"]
        ledger("start", n)
        if block and msg.key == "block":
            while not os.path.exists(block):  # noqa: ASYNC110, ASYNC240 (test makes it)
                await asyncio.sleep(0.02)
        if delay:
            await asyncio.sleep(delay)
        if cpu:
            _spin(cpu)
        ledger("done", n)

    yield receiver
    ledger("closed", "-")
