"""Health probes and metrics on one port, served by uvicorn (the ``[serve]`` extra).

``GET /livez``: 200 while the service's loops run and make progress; 503 when a loop died,
a delivery stayed unsettled past a receiver's ``stall_timeout`` (a hung handler), or a
relay's batch hung (``OutboxRelay.health()``), with the reason as JSON. ``GET /readyz``:
200 once every receiver started (joined its groups) while the engines answer and every
relay and cleaner makes progress; 503 before, while an engine fails, while a relay or
cleaner has failed at every attempt for its ``unhealthy_after``, and while stopping.
``GET /metrics``: the Prometheus text of the ``prometheus_client`` registry, which an
OpenTelemetry ``PrometheusMetricReader`` (the ``[prometheus]`` extra) feeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

from ..errors import ConfigurationError, install_hint
from .service import Service

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def _prometheus_text() -> tuple[int, bytes, str] | None:
    try:
        from prometheus_client import REGISTRY, generate_latest
        from prometheus_client.exposition import CONTENT_TYPE_LATEST
    except ModuleNotFoundError:
        return None
    return 200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def enable_prometheus() -> bool:
    """Make the global OpenTelemetry meter provider feed ``/metrics``, unless one was set.

    True when the ``[prometheus]`` extra is there (and so ``Telemetry()`` without a meter
    provider reports to ``/metrics``)."""
    try:
        from opentelemetry import metrics
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
    except ModuleNotFoundError:
        return False
    if not isinstance(metrics.get_meter_provider(), MeterProvider):  # none set yet
        metrics.set_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader()]))
    return True


class ProbeApp:
    """The ASGI application of the three endpoints over one :class:`Service`."""

    def __init__(self, service: Service) -> None:
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope.get("path", "")
        if scope.get("method") not in ("GET", "HEAD"):
            await _send(send, 405, _json({"error": "only GET"}), "application/json")
        elif path == "/livez":
            ok, body = self.service.liveness()
            await _send(send, 200 if ok else 503, _json(body), "application/json")
        elif path == "/readyz":
            ok, body = self.service.readiness()
            await _send(send, 200 if ok else 503, _json(body), "application/json")
        elif path == "/metrics":
            text = _prometheus_text()
            if text is None:
                body = {"error": f"metrics need prometheus_client: {install_hint('prometheus')}"}
                await _send(send, 501, _json(body), "application/json")
            else:
                await _send(send, *text)
        else:
            body = {"error": f"no such endpoint {path!r}: /livez, /readyz or /metrics"}
            await _send(send, 404, _json(body), "application/json")


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, default=str).encode()


async def _send(send: Send, status: int, body: bytes, content_type: str) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ProbeServer:
    """uvicorn serving :class:`ProbeApp` inside the running loop (no signal handlers of its
    own: the runner's handle SIGTERM and SIGINT)."""

    def __init__(self, service: Service, *, host: str, port: int) -> None:
        try:
            import uvicorn
        except ModuleNotFoundError as exc:
            raise ConfigurationError(f"--http-port needs uvicorn: {install_hint('serve')}") from exc

        class _Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        config = uvicorn.Config(
            ProbeApp(service),
            host=host,
            port=port,
            lifespan="off",
            access_log=False,
            log_level="warning",
        )
        self._server = _Server(config)
        self._host, self._port = host, port
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen and serve in the background; ConfigurationError if the port is taken.

        The socket is bound here, not by uvicorn, which would end the process
        (``sys.exit``) when it cannot bind."""
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        try:
            sock = socket.create_server((self._host, self._port), family=family)
        except OSError as exc:
            raise ConfigurationError(
                f"the probe server cannot listen on {self._host}:{self._port} "
                f"({exc.strerror or exc}): choose another --http-port or --http-host"
            ) from exc
        self._task = asyncio.create_task(self._server.serve([sock]), name="hexa-event:probes")
        while not self._server.started and not self._task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if self._task.done():
            sock.close()
            self._task.result()
            raise ConfigurationError("the probe server stopped at start (see the log above)")

    async def close(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(BaseException):
            await self._task
