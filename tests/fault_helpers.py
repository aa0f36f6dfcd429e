"""The shared flow of the broker fault tests: events emitted and handled while faults happen.

:class:`FaultFlow` emits ``total`` events with fixed ids in batches kept in step with the
receiver (so both are in flight when a fault strikes), re-emits a batch whose emit failed
(same ids: the receiver must recognise the duplicates), runs each fault once enough events
were handled, and checks at the end that every event was handled and its context carried
the producer's id. Each engine's test supplies its faults and its own health checks.

A stall (handling stops past its deadline) fails only after :func:`dump_stacks` wrote every
thread's stack into the test's output, so a consumer stuck inside a client library leaves
its trace behind; :func:`stacks_after` does the same when the test itself hangs (a main
thread blocked in C, which pytest-timeout cannot interrupt).

:func:`guard_lifecycle` keeps broker faults in the phase of ``make test`` made for them: a
test may stop, kill or restart a shared service (kafka, pulsar, nats, stan, postgres) only
when it is marked ``disruptive`` (the serial phase), and an on-demand one only when its
tests share an ``xdist_group`` (one worker of the parallel phase) or are ``disruptive``.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, NoReturn

from hexa_event.context import Context
from hexa_event.emitter import Emitter
from hexa_event.errors import DriverError
from hexa_event.event import Event, Message
from hexa_event_services import SERVICE_NAMES

log = logging.getLogger(__name__)

TOTAL = int(os.environ.get("HEXA_FAULT_EVENTS", "10000"))


def _stderr_fd() -> int:
    """The process's stderr (pytest's capture redirects this descriptor into the report)."""
    stream = sys.__stderr__
    return stream.fileno() if stream is not None else 2


def dump_stacks(why: str) -> None:
    """Write every thread's stack (faulthandler: threads blocked in C included) to stderr,
    which pytest shows with the failure."""
    fd = _stderr_fd()
    os.write(fd, f"\n--- {why}: the stacks of every thread ---\n".encode())
    faulthandler.dump_traceback(file=fd, all_threads=True)


def stall(why: str) -> NoReturn:
    """Fail a fault test that stopped making progress, with every thread's stack."""
    dump_stacks(why)
    raise AssertionError(why)


def stacks_before_timeout(config: Any, node: Any, margin: float = 15.0) -> float:
    """Seconds after which :func:`stacks_after` should dump for a test: ``margin`` before
    its pytest-timeout (its ``timeout`` marker, else the configured one)."""
    marker = node.get_closest_marker("timeout")
    limit = float(marker.args[0]) if marker and marker.args else float(config.getini("timeout"))
    return max(1.0, limit - margin)


@contextlib.contextmanager
def stacks_after(seconds: float) -> Iterator[None]:
    """Dump every thread's stack if the block is still running after ``seconds`` (from a
    watchdog thread of faulthandler's, so a main thread blocked in C is caught too)."""
    faulthandler.dump_traceback_later(seconds, file=_stderr_fd())
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


async def acknowledged(
    emitter: Emitter, channel: str, within: float, note: Callable[[str], None] = log.info
) -> None:
    """Wait until an emit to ``channel`` (a probe channel of the test's own, provisioned)
    is acknowledged. After an earlier test's fault a cluster may take a while to load its
    coordinators and metadata (``Coordinator load in progress``, an unknown topic), which
    is not what the next test measures; past ``within`` seconds the test fails as a stall."""
    began = time.monotonic()
    while True:
        try:
            await asyncio.wait_for(emitter.emit(Event(channel, "k", {})), 30)
            break
        except (TimeoutError, DriverError) as exc:
            if time.monotonic() - began > within:
                stall(f"the cluster does not acknowledge emits: {exc!r}")
            await asyncio.sleep(0.5)
    if time.monotonic() - began > 1:
        note(f"(the cluster acknowledged emits after {time.monotonic() - began:.1f}s)")


class FaultFlow:
    """Events of one channel, their emitting and their handling across faults."""

    def __init__(
        self,
        channel: str,
        tag: str,
        *,
        total: int = TOTAL,
        batch: int = 100,
        max_lag: int = 1000,
        patience: float = 180.0,
    ) -> None:
        self.total = total
        self.events = [
            Event(channel, f"k{i % 97}", {"i": i}, id=f"{tag}-{i}") for i in range(total)
        ]
        self.handled: Counter[str] = Counter()
        self.context_ids: set[str] = set()
        self.emitted: list[str] = []
        self.stored: list[tuple[float, int]] = []
        """(when, how many events were emitted by then) after each batch the broker stored."""
        self.emit_retries = 0
        self.timeline: list[str] = []
        self._batch = batch
        self._max_lag = max_lag
        self._patience = patience
        self._hold: int | None = None
        """While a fault waits for its moment, emitting stops here (so a fast receiver
        cannot run to the end of the events before the fault strikes)."""

    async def handle(self, ctx: Context, msg: Message[Any]) -> None:
        """The receiver's handler (or the end of one): count the event and its context id."""
        self.handled[msg.id] += 1
        self.context_ids.add(ctx.event_id)

    async def emit_all(self, emitter: Emitter) -> None:
        """Emit every event, batch by batch, never more than ``max_lag`` ahead of handling."""
        for start in range(0, self.total, self._batch):
            batch = self.events[start : start + self._batch]
            deadline = time.monotonic() + self._patience
            while len(self.handled) < len(self.emitted) - self._max_lag or (
                self._hold is not None and len(self.emitted) >= self._hold
            ):
                if time.monotonic() >= deadline:
                    stall(
                        f"consumer stopped making progress: {len(self.handled)} handled of "
                        f"{len(self.emitted)} emitted"
                    )
                await asyncio.sleep(0.01)
            while True:
                try:
                    self.emitted.extend(await emitter.emit_many(batch))
                    self.stored.append((time.monotonic(), len(self.emitted)))
                    break
                except DriverError as exc:
                    # Re-emitting keeps the ids: the receiver recognises the duplicates.
                    self.emit_retries += 1
                    log.warning("emit failed during a fault, retrying the batch: %s", exc)
                    assert time.monotonic() < deadline, "the broker did not come back"
                    await asyncio.sleep(0.5)

    @property
    def emit_limit(self) -> int:
        """The events that may be emitted now: ``total``, or fewer while a fault holds
        emitting back (:meth:`fault_at`); a fault waiting for more handled ones would wait
        for events that are never emitted."""
        return self.total if self._hold is None else min(self.total, self._hold)

    async def wait_handled(self, count: int, within: float) -> None:
        deadline = time.monotonic() + within
        while len(self.handled) < count:
            if time.monotonic() >= deadline:
                stall(f"only {len(self.handled)} of {count} handled within {within:g} s")
            await asyncio.sleep(0.05)

    async def fault_at(
        self, count: int, name: str, fault: Callable[[], Awaitable[None]], within: float = 120.0
    ) -> float:
        """Run ``fault`` once ``count`` events were handled; the seconds it took."""
        self._hold = count + self._max_lag
        try:
            await self.wait_handled(count, within)
            at_emitted, at_handled = len(self.emitted), len(self.handled)
            # Emitting goes on while the fault strikes, up to ``max_lag`` more events: a
            # fault that ends after the broker came back (a restart that waits for
            # readiness) must not see the rest of the events run before the next fault.
            self._hold = at_emitted + self._max_lag
            began = time.monotonic()
            await fault()
        finally:
            self._hold = None
        self.timeline.append(f"{name} at {at_emitted} emitted / {at_handled} handled")
        return time.monotonic() - began

    def verify(self) -> int:
        """Every event handled, with the producer's id in its context; the redeliveries."""
        expected = {e.id for e in self.events}
        assert set(self.handled) == expected, f"lost: {len(expected - set(self.handled))}"
        assert self.context_ids == expected  # HEXA_EVENT_ID in the context: the producer's id
        assert all(int(t.split()[2]) < self.total for t in self.timeline), (
            "emitting had ended before a fault: no fault under load"
        )
        return sum(n - 1 for n in self.handled.values())

    def summary(self, downtime: list[float]) -> str:
        return (
            f"\nfault test: {self.total} events, {len(downtime)} faults "
            f"({', '.join(f'{d:.1f}s' for d in downtime)}), handled all, "
            f"{sum(n - 1 for n in self.handled.values())} redeliveries (same HEXA_EVENT_ID), "
            f"{self.emit_retries} emit batches retried; {'; '.join(self.timeline)}"
        )


LIFECYCLE = ("stop", "kill", "restart")
"""The methods of a service that take it away from the tests using it."""


def lifecycle_refusal(service: str, method: str, marks: set[str]) -> str | None:
    """Why a test carrying ``marks`` may not call ``method`` on ``service`` (None: it may).

    A shared service serves every worker of the parallel phase: only a ``disruptive`` test
    (the serial phase) may take it away. An on-demand one serves the tests of one
    ``xdist_group`` (``tests/conftest.py`` groups them by the fixture that starts it)."""
    if "disruptive" in marks:
        return None
    if service in SERVICE_NAMES:
        return (
            f"this test calls {method}() on the shared service {service!r}, which the other "
            "tests of make test's parallel phase are using: mark it "
            "@pytest.mark.disruptive so that it runs in the serial phase "
            "(CONTRIBUTING.md, the testing section)"
        )
    if "xdist_group" not in marks:
        return (
            f"this test calls {method}() on the on-demand service {service!r}: keep the tests "
            "of that service on one worker with @pytest.mark.xdist_group (tests/conftest.py "
            "does it for the fixtures that start one) or mark it @pytest.mark.disruptive"
        )
    return None


def guard_lifecycle(monkeypatch: Any, cls: type, marks: set[str]) -> None:
    """Make ``cls``'s :data:`LIFECYCLE` methods fail (before doing anything) when
    :func:`lifecycle_refusal` refuses them for a test carrying ``marks``."""
    for method in LIFECYCLE:
        original = getattr(cls, method)

        def guarded(
            self: Any, *args: Any, _original: Any = original, _method: str = method, **kwargs: Any
        ) -> Any:
            why = lifecycle_refusal(self.name, _method, marks)
            if why is not None:
                raise AssertionError(why)
            return _original(self, *args, **kwargs)

        guarded.__wrapped__ = original  # type: ignore[attr-defined]
        monkeypatch.setattr(cls, method, guarded)
