"""Issue 20 #5: the handler-duration histogram has buckets in seconds; the Prometheus
endpoint's bind address is a parameter (0.0.0.0 for containers)."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import hexa_event as he
from hexa_event.telemetry import DURATION_BUCKETS, Telemetry, serve_prometheus
from hexa_event.testing import eventually
from otel_helpers import Otel, make_otel


@pytest.fixture
def otel() -> Iterator[Otel]:
    made = make_otel()
    yield made
    made.meters.shutdown()


def _histogram(otel: Otel, name: str) -> Any:
    data = otel.reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    return metric.data.data_points[0]
    return None


async def test_handler_durations_land_in_second_buckets(otel: Otel) -> None:
    conn = otel.telemetry.instrument(he.connect(f"memory://{uuid.uuid4().hex}"))
    done = asyncio.Event()
    receiver = conn.receiver("svc")

    @receiver.subscribe("orders", action="a")
    async def quick(ctx: he.Context, msg: he.Message[Any]) -> None:
        done.set()

    async with receiver:
        await conn.emitter().emit(he.Event("orders", "k", {}))
        await asyncio.wait_for(done.wait(), 10)
        await eventually(
            lambda: _histogram(otel, "hexa_event.handler.duration") is not None, within=10
        )
    await conn.close()
    point = _histogram(otel, "hexa_event.handler.duration")
    assert tuple(point.explicit_bounds) == DURATION_BUCKETS
    assert point.explicit_bounds[0] == 0.001
    assert point.explicit_bounds[-1] == 60.0
    # A handler that returns at once falls in a sub-second bucket, not the first 0-5 one.
    first_used = next(i for i, n in enumerate(point.bucket_counts) if n)
    assert point.explicit_bounds[first_used] <= 1.0


async def test_serve_prometheus_binds_the_address_given() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Another loopback address than the default proves ``addr`` is bound as given (a
    # container passes "0.0.0.0"; tests stay on loopback).
    meters = serve_prometheus(port, addr="127.0.0.2")
    try:
        conn = Telemetry(meter_provider=meters).instrument(
            he.connect(f"memory://{uuid.uuid4().hex}")
        )
        await conn.emitter().emit(he.Event("scraped", "k", {"n": 1}))
        listening = [
            line.split()[1]
            for line in Path("/proc/net/tcp").read_text().splitlines()[1:]  # noqa: ASYNC240
            if line.split()[3] == "0A"
        ]
        assert f"0200007F:{port:04X}" in listening  # 127.0.0.2, not the default 127.0.0.1

        def scrape() -> str:
            with urllib.request.urlopen(f"http://127.0.0.2:{port}/metrics", timeout=10) as page:
                return str(page.read().decode())

        assert "hexa_event_emitted_total" in await asyncio.to_thread(scrape)
        await conn.close()
    finally:
        meters.shutdown()
