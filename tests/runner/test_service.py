"""The runner in-process (no services): target shapes, ``he.serve`` until stopped, a failing
part, probes' verdicts, and what a bad target says."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import hexa_event as he
from hexa_event.outbox import Outbox, OutboxRelay, migrate_async
from hexa_event.runner import Service, load_target
from hexa_event.runner.targets import open_components
from hexa_event.testing import Collector


def receiver_on(conn: he.Connection, got: Collector, channel: str = "orders") -> he.Receiver:
    receiver = conn.receiver("svc", drain_timeout=5)
    receiver.subscribe(channel, action=f"act-{channel}", handler=got.add_message)
    return receiver


async def stop_when(service: Service, condition: Any) -> None:
    while not condition():  # noqa: ASYNC110 (polls what the handlers collected)
        await asyncio.sleep(0.01)
    service.stop()


async def test_serve_runs_a_factory_until_stopped_and_closes_everything() -> None:
    conn = he.connect("memory://serve-factory")
    got = Collector()
    closed: list[str] = []

    async def build() -> AsyncIterator[Any]:
        yield [receiver_on(conn, got, "a"), receiver_on(conn, got, "b")]
        closed.append("generator")

    service = Service(build)
    emitter = conn.emitter()

    async def drive() -> None:
        while not service.started:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        await emitter.emit(he.Event(channel="a", key="k", payload={"n": 1}))
        await emitter.emit(he.Event(channel="b", key="k", payload={"n": 2}))
        await got.wait_for(2, within=10)
        assert service.readiness()[0] is True
        assert service.liveness()[0] is True
        service.stop()

    await asyncio.gather(he.serve(service, handle_signals=False), drive())
    assert closed == ["generator"]
    assert service.components is not None
    assert all(r.health()["state"] == "closed" for r in service.components.receivers)
    ready, body = service.readiness()
    assert not ready
    assert body["reason"] == "stopping"


async def test_a_relay_and_a_receiver_in_a_list(tmp_path: Path) -> None:
    """The outbox relay runs as a loop beside the receiver and stops with it."""
    log = he.connect(f"sqlite:///{tmp_path / 'log.db'}")
    db = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    relay = OutboxRelay(db, log, poll_interval=0.05)
    await migrate_async(relay.engine)
    got = Collector()
    service = Service([receiver_on(log, got), relay])
    async with relay.engine.begin() as conn:
        await Outbox().emit_async(conn, he.Event(channel="orders", key="k", payload={"n": 1}))
    await asyncio.gather(
        service.run(), stop_when(service, lambda: len(got.items) == 1), return_exceptions=False
    )
    assert got.items[0].payload == {"n": 1}


async def test_a_failing_loop_stops_the_service_and_is_raised() -> None:
    class Broken:
        async def run(self) -> None:
            raise RuntimeError("relay broke")

        def stop(self) -> None:
            pass

    conn = he.connect("memory://serve-broken")
    service = Service([receiver_on(conn, Collector()), Broken()])
    with pytest.raises(RuntimeError, match="relay broke"):
        await asyncio.wait_for(service.run(), 30)
    assert service.components is not None
    assert service.components.receivers[0].health()["state"] == "closed"


async def test_a_second_stop_hurries_a_drain(caplog: pytest.LogCaptureFixture) -> None:
    conn = he.connect("memory://serve-hurry")
    release = asyncio.Event()
    started = asyncio.Event()
    receiver = conn.receiver("svc", drain_timeout=60)

    @receiver.subscribe("slow", action="slow")
    async def slow(ctx: he.Context, msg: he.Message[Any]) -> None:
        started.set()
        await release.wait()

    service = Service(receiver)
    running = asyncio.create_task(service.run())
    while not service.started:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    await conn.emitter().emit(he.Event(channel="slow", key="k", payload={}))
    await asyncio.wait_for(started.wait(), 10)
    service.stop()
    while receiver.health()["state"] != "closed":  # noqa: ASYNC110 (closing began)
        await asyncio.sleep(0.01)
    assert not running.done(), "the first stop did not wait for the handler"
    service.stop()
    await asyncio.wait_for(running, 20)  # not the 60 s drain
    # The log says how long it waited and why it stopped waiting (it said "after 60.0s").
    said = [r.getMessage() for r in caplog.records if "handlers still running" in r.getMessage()]
    assert len(said) == 1, said
    assert "cut short" in said[0], said
    assert "60.0s" not in said[0], said


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "MODULE:ATTR"),
        ("no_such_module_xyz:app", "cannot import"),
        ("hexa_event:no_such_attr", "no attribute"),
    ],
)
def test_bad_targets_say_what_to_fix(spec: str, message: str) -> None:
    with pytest.raises(he.ConfigurationError, match=message):
        load_target(spec)


async def test_a_target_of_the_wrong_kind_is_refused() -> None:
    with pytest.raises(he.ConfigurationError, match="give a Receiver"):
        async with open_components(lambda: 42):
            pass
    with pytest.raises(he.ConfigurationError, match="holds no receiver"):
        async with open_components([]):
            pass
