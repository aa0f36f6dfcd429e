"""examples/fastapi_app.py under a real uvicorn, driven by a real HTTP client (httpx)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import httpx
from runner_helpers import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def start_uvicorn(port: int, tmp: Path, log: IO[bytes]) -> Any:
    env = {
        **os.environ,
        "APP_DB": f"sqlite+aiosqlite:///{tmp / 'app.db'}",
        "EVENTS_URL": f"sqlite:///{tmp / 'events.db'}",
    }
    argv = [sys.executable, "-m", "uvicorn", "fastapi_app:app", "--app-dir", str(EXAMPLES)]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    return subprocess.Popen(argv, env=env, stdout=log, stderr=log)


async def test_the_fastapi_example_serves_orders_through_the_outbox(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "uvicorn.log"
    with log_path.open("wb") as log:
        server = start_uvicorn(port, tmp_path, log)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

                async def up() -> bool:
                    try:
                        return (await client.get("/health")).status_code == 200
                    except httpx.TransportError:
                        return False

                deadline = asyncio.get_running_loop().time() + 60
                while not await up():
                    assert asyncio.get_running_loop().time() < deadline, log_path.read_text()
                    await asyncio.sleep(0.1)
                placed = []
                for n in range(3):
                    answer = await client.post(
                        "/orders",
                        json={"customer": f"c{n}", "total_cents": 100 * n},
                        headers={"x-request-id": f"req-{n}"},
                    )
                    assert answer.status_code == 200, answer.text
                    placed.append(answer.json()["order_id"])
                ping = await client.post("/pings")
                assert ping.status_code == 200
                assert ping.json()["event_id"]

                seen: list[str] = []

                async def poll() -> None:
                    seen[:] = (await client.get("/handled")).json()["orders"]

                deadline = asyncio.get_running_loop().time() + 60
                while sorted(seen) != sorted(placed):
                    assert asyncio.get_running_loop().time() < deadline, seen
                    await poll()
                    await asyncio.sleep(0.05)
                health = (await client.get("/health")).json()
                assert health["healthy"] is True, health
            server.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(server.wait, 60)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
    output = log_path.read_text()
    # uvicorn re-raises the SIGTERM it caught once the lifespan shut down (exit -15)
    assert code in (0, -signal.SIGTERM), output[-3000:]
    assert "Application shutdown complete" in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
