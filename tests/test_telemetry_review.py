"""serve_prometheus's port and stopping its endpoint; telemetry's own failures logged with
a bound (a broken span processor fails at every event)."""

from __future__ import annotations

import asyncio
import logging
import socket
import urllib.request
import uuid
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

import hexa_event as he
from hexa_event.telemetry import Telemetry, serve_prometheus


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("port", [99999, 65536, 0, -1, float("nan"), 9464.0, True, "9464"])
def test_serve_prometheus_refuses_a_port_naming_it(port: Any) -> None:
    """99999 or -1 raised a raw OverflowError out of the socket, 0 listened on a port
    nobody is told, NaN a TypeError."""
    with pytest.raises(he.ConfigurationError, match="port must be an integer from 1 to 65535"):
        serve_prometheus(port)


def test_serve_prometheus_says_which_port_it_cannot_listen_on() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(he.ConfigurationError, match=f"cannot listen on 127.0.0.1:{port}"):
            serve_prometheus(port)


async def test_shutting_the_provider_down_stops_the_endpoint() -> None:
    """The endpoint served on after the provider's shutdown, with no way to stop it: the
    port stayed taken until the process ended."""
    port = _free_port()
    meters = serve_prometheus(port)

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
            return str(page.read().decode())

    assert "python_info" in await asyncio.to_thread(scrape)
    await asyncio.to_thread(meters.shutdown)  # type: ignore[attr-defined]
    with socket.socket() as client:
        client.settimeout(10)
        with pytest.raises(ConnectionRefusedError):
            client.connect(("127.0.0.1", port))
    again = serve_prometheus(port)  # the port is free again
    await asyncio.to_thread(again.shutdown)  # type: ignore[attr-defined]


class _Broken(SpanProcessor):
    """A span processor of the application's that raises when a span ends."""

    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("exporter bug")


async def test_a_broken_span_processor_is_logged_once_not_once_per_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each failing span logged its own traceback: a broken processor wrote one per event
    emitted and handled. Now the first is logged with the count, the others counted."""
    caplog.set_level(logging.ERROR, logger="hexa_event.telemetry")
    provider = TracerProvider()
    provider.add_span_processor(_Broken())
    conn = Telemetry(tracer_provider=provider).instrument(
        he.connect(f"memory://telemetry-{uuid.uuid4().hex}")
    )
    emitter = conn.emitter()
    for n in range(50):
        await emitter.emit(he.Event("orders", "k", {"n": n}))
    await conn.close()
    failures = [r for r in caplog.records if "telemetry failed" in r.getMessage()]
    assert len(failures) == 1
    assert "1 failures so far, 0 not logged" in failures[0].getMessage()
    assert "exporter bug" in caplog.text  # with the traceback
