"""The fault tests' stall reporting: a stall fails with every thread's stack in the output."""

from __future__ import annotations

import threading
import time

import pytest

from fault_helpers import FaultFlow, stacks_after


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
