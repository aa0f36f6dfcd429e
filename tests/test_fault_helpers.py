"""The fault tests' stall reporting: a stall fails with every thread's stack in the output;
the guard that keeps stopping, killing and restarting services in the tests marked for it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from fault_helpers import (
    LIFECYCLE,
    FaultFlow,
    guard_lifecycle,
    stacks_after,
)
from hexa_event_services import Service


def _park(release: threading.Event) -> None:
    release.wait()  # a thread stuck somewhere, as a consumer thread in a client library


async def test_a_stall_fails_with_every_threads_stack(capfd: pytest.CaptureFixture[str]) -> None:
    flow = FaultFlow("stall-chan", "stall", total=3)
    release = threading.Event()
    parked = threading.Thread(target=_park, args=(release,), name="parked-consumer")
    parked.start()
    try:
        with pytest.raises(AssertionError, match="only 0 of 3 handled"):
            await flow.wait_handled(3, within=0.05)
    finally:
        release.set()
        parked.join()
    err = capfd.readouterr().err
    assert "only 0 of 3 handled within 0.05 s: the stacks of every thread" in err
    assert "in _park" in err  # the stuck thread's own frame
    assert "in wait_handled" in err


def test_stacks_after_dumps_a_block_that_hangs(capfd: pytest.CaptureFixture[str]) -> None:
    err = ""
    with stacks_after(0.05):
        deadline = time.monotonic() + 10
        while "test_stacks_after_dumps_a_block_that_hangs" not in err:  # the block hangs on
            assert time.monotonic() < deadline, f"no stacks dumped: {err!r}"
            threading.Event().wait(0.02)
            err += capfd.readouterr().err


async def test_emit_limit_is_what_a_fault_may_still_see_emitted() -> None:
    flow = FaultFlow("limit-chan", "limit", total=50, batch=10, max_lag=20)
    assert flow.emit_limit == 50
    seen: list[int] = []

    async def fault() -> None:
        seen.append(flow.emit_limit)

    flow.handled.update(f"limit-{i}" for i in range(5))
    flow.emitted.extend(f"limit-{i}" for i in range(10))
    await flow.fault_at(5, "fault", fault, within=1)
    assert seen == [30]  # 10 emitted when it struck, plus max_lag
    assert flow.emit_limit == 50


class _Node:
    """Stands for a service: records the lifecycle calls that got through."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[str] = []

    def stop(self, timeout: float | None = None) -> None:
        self.calls.append("stop")

    def kill(self) -> None:
        self.calls.append("kill")

    def restart(self, keep_data: bool = True, timeout: float | None = None) -> None:
        self.calls.append(f"restart keep_data={keep_data}")


@pytest.mark.parametrize("method", LIFECYCLE)
def test_a_shared_broker_is_taken_away_only_by_a_disruptive_test(
    monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    kafka = _Node("kafka")
    guard_lifecycle(monkeypatch, _Node, {"kafka", "slow", "xdist_group"})
    with pytest.raises(AssertionError, match=r"mark it @pytest.mark.disruptive"):
        getattr(kafka, method)()
    assert kafka.calls == []  # refused before anything happened

    monkeypatch.undo()
    guard_lifecycle(monkeypatch, _Node, {"kafka", "disruptive"})
    getattr(kafka, method)()
    assert len(kafka.calls) == 1


def test_an_on_demand_service_is_taken_away_only_from_one_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = _Node("kafka-cluster-2")
    guard_lifecycle(monkeypatch, _Node, {"kafka_cluster"})
    with pytest.raises(AssertionError, match=r"xdist_group"):
        node.restart(False)
    monkeypatch.undo()
    guard_lifecycle(monkeypatch, _Node, {"kafka_cluster", "xdist_group"})
    node.restart(False)
    assert node.calls == ["restart keep_data=False"]


class _Decoy(Service):
    """A shared service's name over files of its own: never the real service."""

    name = "nats"


def _decoy(directory: Path) -> _Decoy:
    decoy = _Decoy()
    decoy.run_dir, decoy.pid_file = directory, directory / "pid.json"
    decoy.log_path = directory / "decoy.log"
    return decoy


def test_every_test_runs_with_the_services_guarded(tmp_path: Path) -> None:
    decoy = _decoy(tmp_path)  # not marked disruptive, not grouped: refused
    for method in LIFECYCLE:
        with pytest.raises(AssertionError, match=r"shared service 'nats'"):
            getattr(decoy, method)()


@pytest.mark.xdist_group("decoy")
def test_a_group_does_not_let_a_test_take_a_shared_broker_away(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=r"mark it @pytest.mark.disruptive"):
        _decoy(tmp_path).kill()
