"""The runner freezes the heap once its receivers have started (``gc.freeze()``, so the
collector's full collections skip it) and raises the young generation's threshold (so young
collections stop walking the events in flight), and undoes both when stopped;
``gc_tuning=False`` and a process that manages the collector itself are left alone."""

from __future__ import annotations

import asyncio
import gc

import hexa_event as he
from hexa_event.runner import Service, collector
from hexa_event.testing import Collector

seen_thresholds: list[tuple[int, int, int]] = []


async def serve_one_event(
    name: str, serve_options: dict[str, bool] | None = None, **options: bool
) -> tuple[int, Service]:
    """Serve a receiver until it handled one event; the frozen objects' count meanwhile
    (the thresholds meanwhile in :data:`seen_thresholds`)."""
    conn = he.connect(f"memory://{name}")
    got = Collector()
    receiver = conn.receiver("svc", drain_timeout=5)
    receiver.subscribe("orders", action="count", handler=got.add_message)
    service = Service(receiver, **options)
    frozen = -1

    async def drive() -> None:
        nonlocal frozen
        while not service.started:  # noqa: ASYNC110 (no event tells it started)
            await asyncio.sleep(0.01)
        await conn.emitter().emit(he.Event(channel="orders", key="k", payload={"n": 1}))
        await got.wait_for(1, within=10)
        frozen = gc.get_freeze_count()
        seen_thresholds.append(gc.get_threshold())
        service.stop()

    await asyncio.wait_for(
        asyncio.gather(he.serve(service, handle_signals=False, **(serve_options or {})), drive()),
        30,
    )
    return frozen, service


async def test_the_heap_is_frozen_while_serving_and_unfrozen_once_stopped() -> None:
    frozen, _ = await serve_one_event("gc-tuned")
    assert frozen > 1000  # the modules, the driver and the receiver at least
    assert gc.get_freeze_count() == 0


async def test_the_young_threshold_is_raised_while_serving_and_restored_once_stopped() -> None:
    seen_thresholds.clear()
    await serve_one_event("gc-threshold")
    assert seen_thresholds == [(collector.YOUNG_THRESHOLD, 10, 10)]
    assert gc.get_threshold() == (700, 10, 10)


async def test_thresholds_the_process_set_are_kept() -> None:
    seen_thresholds.clear()
    gc.set_threshold(5_000, 20, 30)
    await serve_one_event("gc-own-threshold")
    assert seen_thresholds == [(5_000, 20, 30)]
    assert gc.get_threshold() == (5_000, 20, 30)
    seen_thresholds.clear()
    await serve_one_event("gc-threshold-untuned", gc_tuning=False)
    assert seen_thresholds == [(5_000, 20, 30)]


def test_a_threshold_set_while_serving_is_not_undone() -> None:
    tuned = collector.tune()
    try:
        gc.set_threshold(2_000, 10, 10)
    finally:
        collector.restore(tuned)
    assert gc.get_threshold() == (2_000, 10, 10)
    assert gc.get_freeze_count() == 0


async def test_gc_tuning_false_leaves_the_collector_alone() -> None:
    frozen, _ = await serve_one_event("gc-untuned", gc_tuning=False)
    assert frozen == 0


async def test_gc_tuning_false_given_to_serve_with_a_service_is_kept() -> None:
    frozen, _ = await serve_one_event("gc-untuned-serve", {"gc_tuning": False})
    assert frozen == 0


async def test_a_process_that_froze_or_disabled_the_collector_keeps_its_setting() -> None:
    gc.freeze()
    before = gc.get_freeze_count()
    frozen, _ = await serve_one_event("gc-frozen-before")
    assert 0 < frozen <= before  # frozen objects may die, none were added
    assert gc.get_freeze_count() > 0  # nor unfrozen by the runner
    gc.unfreeze()
    gc.disable()
    frozen, _ = await serve_one_event("gc-disabled")
    assert frozen == 0
    assert not gc.isenabled()


def test_the_command_line_turns_it_off() -> None:
    import argparse

    from hexa_event.runner.command import add_run_command

    parser = argparse.ArgumentParser()
    add_run_command(parser.add_subparsers())
    assert parser.parse_args(["run", "m:a"]).gc_tuning is True
    assert parser.parse_args(["run", "m:a", "--no-gc-tuning"]).gc_tuning is False


def test_worker_processes_are_told_to_leave_it_alone_too() -> None:
    from hexa_event.runner.supervisor import Supervisor

    tuning = Supervisor("m:a", workers=2)
    leaving = Supervisor("m:a", workers=2, gc_tuning=False)
    tuned = tuning._argv(tuning.workers[1])
    untuned = leaving._argv(leaving.workers[1])
    assert "--no-gc-tuning" not in tuned
    assert untuned == [*tuned, "--no-gc-tuning"]
