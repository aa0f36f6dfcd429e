"""A driver closed under a running receiver (SQL, Pulsar, NATS JetStream): the receiver
ends (its wait_closed raises ReceiverFailedError), its health says why, and no event is
lost: what it did not settle is handled by the next receiver of the action."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

import hexa_event as he
from hexa_event.errors import ReceiverFailedError
from hexa_event.testing.waiting import Collector, eventually


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("pulsar", marks=pytest.mark.pulsar),
        pytest.param("nats", marks=pytest.mark.nats),
    ]
)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """The URL and options of one engine."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}", {}
    from hexa_event_services import env, require_service

    url = require_service(request.param).url
    if request.param == "pulsar":
        return url, {"admin_url": env("HEXA_PULSAR_ADMIN_URL")}
    if request.param == "nats":
        return url, {"stream": "HEXA_TEST", "subject_prefix": "hexa-test", "max_age": 3600.0}
    return url, {}


async def test_a_driver_closed_under_a_running_receiver(
    engine: tuple[str, dict[str, Any]],
) -> None:
    url, options = engine
    tag = uuid.uuid4().hex[:8]
    channel, action = f"cu-{tag}", f"cu-act-{tag}"
    conn = he.connect(url, **options)
    await conn.provision([channel])
    handled = Collector()
    first_run: set[str] = set()
    release = asyncio.Event()

    async def slow(ctx: he.Context, msg: he.Message[Any]) -> None:
        first_run.add(msg.id)
        if len(first_run) > 5:
            await release.wait()  # in flight while the driver closes
        handled.add(msg.id)

    ids = set(
        await conn.emitter().emit_many(he.Event(channel, f"k{n}", {"n": n}) for n in range(20))
    )
    receiver = conn.receiver("svc")
    receiver.subscribe(channel, action=action, handler=slow)
    await receiver.start()
    try:
        await eventually(lambda: len(first_run) > 5, within=60, what="handlers running")
        await conn.close()
        release.set()
        with pytest.raises(ReceiverFailedError, match="driver closed under it"):
            async with asyncio.timeout(60):
                await receiver.wait_closed()
        health = receiver.health()
        assert not health["healthy"]
        assert "driver closed under it" in health["reason"]
    finally:
        release.set()
        await receiver.close()
        await conn.close()

    again = he.connect(url, **options)
    receiver = again.receiver("svc")
    receiver.subscribe(channel, action=action, handler=lambda c, m: handled.add(m.id))
    try:
        async with receiver:
            await eventually(lambda: set(handled.items) >= ids, within=90, what="every event")
    finally:
        await again.close()
