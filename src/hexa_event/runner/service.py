"""One process's service: start the components, serve until stopped, drain, close.

:meth:`Service.stop` (the first SIGTERM or SIGINT) stops fetching at once and lets every
receiver finish its running and queued handlers within its ``drain_timeout``, write every
settlement, leave its groups and close; relays and cleaners finish the batch in hand.
:meth:`Service.stop` with ``force=True`` (the second signal) cuts the drains short: running
handlers are cancelled and queued events given back, what settled is still written; relay
and cleaner loops are cancelled (a batch being published stays unsent: it is sent again).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ..errors import ReceiverFailedError
from ..numbers import duration
from . import collector
from .targets import Components, close_drivers, open_components

logger = logging.getLogger(__name__)


class Service:
    """Runs a target's components in this process; :meth:`run` returns when stopped."""

    def __init__(self, target: Any, *, gc_tuning: bool = True) -> None:
        self.target = target
        self.gc_tuning = gc_tuning
        """Tune the garbage collector once started (:mod:`hexa_event.runner.collector`)."""
        self.components: Components | None = None
        self.started = False
        self.stopping = False
        self._stop = asyncio.Event()
        self._forced = False
        self._loop_tasks: list[asyncio.Task[None]] = []
        self._failure: BaseException | None = None

    # -- control ------------------------------------------------------------------------------

    def stop(self, *, force: bool = False) -> None:
        """Begin a graceful stop; ``force`` (or a second call) cuts the drain short."""
        if self.stopping or force:
            self._forced = True
            if self.components is not None:
                for receiver in self.components.receivers:
                    receiver.hurry()
            for task in self._loop_tasks:  # a relay's publish or a cleaner's delete may hang
                task.cancel()
        self.stopping = True
        self._stop.set()

    async def run(self, *, on_started: Callable[[], None] | None = None) -> None:
        """Build, start, serve until :meth:`stop` or a component fails, then close all.

        Raises what made a component fail (a receiver's ``ReceiverFailedError``, a loop's
        exception) after everything was closed.
        """
        async with open_components(self.target) as components:
            self.components = components
            if self._forced:
                self.stop(force=True)
            tuned: collector.Tuning | None = None
            try:
                await self._start(components)
                if on_started is not None:
                    on_started()
                if not self.stopping:
                    if self.gc_tuning:
                        tuned = collector.tune()
                    await self._serve(components)
            finally:
                began = time.monotonic()
                try:
                    await self._close(components)
                finally:  # also when cancelled while closing
                    collector.restore(tuned)
                logger.info("stopped in %.1fs", time.monotonic() - began)
        if self._failure is not None:
            raise self._failure

    async def _start(self, components: Components) -> None:
        for receiver in components.receivers:
            if self.stopping:
                return
            starting = asyncio.ensure_future(receiver.start())
            stop = asyncio.ensure_future(self._stop.wait())
            try:
                await asyncio.wait((starting, stop), return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
                if not starting.done():  # a stop (or cancel) while it joins: closing ends it
                    await asyncio.shield(receiver.close())
            await starting
        if self.stopping:
            return
        for loop in components.loops:
            task = asyncio.create_task(loop.run(), name=f"hexa-event:{type(loop).__name__}")
            self._loop_tasks.append(task)
        self.started = True
        logger.info(
            "serving %d receiver(s) and %d relay/cleaner loop(s); SIGTERM or SIGINT stops",
            len(components.receivers),
            len(components.loops),
        )

    async def _serve(self, components: Components) -> None:
        stop = asyncio.ensure_future(self._stop.wait())
        watched: dict[asyncio.Future[Any], str] = {stop: "stop"}
        for receiver in components.receivers:
            watched[asyncio.ensure_future(receiver.wait_closed())] = receiver.name
        for task in self._loop_tasks:
            watched[task] = task.get_name()
        try:
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in watched:
                if future not in self._loop_tasks:
                    future.cancel()
        for future in done:
            if future is stop or (self.stopping and future.cancelled()):
                continue  # a loop a forced stop cancelled
            exc = None if future.cancelled() else future.exception()
            if exc is None:
                exc = ReceiverFailedError(f"{watched[future]} stopped on its own")
            logger.error("%s failed (%s); stopping the service", watched[future], exc)
            if self._failure is None:
                self._failure = exc

    async def _close(self, components: Components) -> None:
        self.stopping = True
        for loop in components.loops:
            loop.stop()
        if self._forced:
            for task in self._loop_tasks:
                task.cancel()
        await asyncio.gather(
            *(asyncio.shield(r.close()) for r in components.receivers), return_exceptions=True
        )
        await self._wait_loops()
        for loop in components.loops:
            close = getattr(loop, "close", None)
            if close is not None:
                try:
                    await close()
                except Exception:
                    logger.exception("closing %r failed", loop)
        await close_drivers(components.drivers)

    async def _wait_loops(self) -> None:
        """Wait for the loops to return. Cancelled meanwhile, it cancels them and raises."""
        tasks = self._loop_tasks
        if not tasks:
            return
        try:
            await asyncio.wait(tasks)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            raise
        for task in tasks:
            exc = None if task.cancelled() else task.exception()
            if exc is not None and exc is not self._failure:
                logger.error("%s failed while stopping: %s", task.get_name(), exc)

    # -- probes -------------------------------------------------------------------------------

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """Alive while the loops run and no delivery is stuck past ``stall_timeout``."""
        reasons: list[str] = []
        for receiver in self._receivers():
            for action, info in receiver.health()["actions"].items():
                if not info.get("alive", True) and not self.stopping:  # (closed when stopped)
                    reasons.append(f"{receiver.name}/{action}: a fetch, settle or worker loop died")
                if info.get("stalled"):
                    reasons.append(
                        f"{receiver.name}/{action}: a delivery has been unsettled for "
                        f"{duration(info['oldest_unsettled_age'])}, past stall_timeout (a handler "
                        "hangs or settlements stall)"
                    )
        for task in self._loop_tasks:
            if task.done() and not self.stopping:
                reasons.append(f"{task.get_name()} stopped")
        for name, health in self._loop_health().items():
            if health.get("stalled") or not health.get("alive", True):
                reasons.append(f"{name}: {health['reason']}")
        return not reasons, {"alive": not reasons, "reason": "; ".join(reasons) or "ok"}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready once started (members joined) while each engine answers and not stopping."""
        reasons: list[str] = []
        if self.stopping:
            reasons.append("stopping")
        elif not self.started:
            reasons.append("starting: receivers not started yet")
        receivers: dict[str, Any] = {}
        for receiver in self._receivers():
            health = receiver.health()
            receivers[receiver.name] = {
                "state": health["state"],
                "actions": {
                    a: {"assigned": len(i["assignment"]), "lag": i["lag"]}
                    for a, i in health["actions"].items()
                },
            }
            if self.stopping or not self.started:
                continue  # said above; a closed receiver's errors would only repeat it
            if health["state"] != "running":
                reasons.append(f"{receiver.name}: {health['state']}")
            for action, info in health["actions"].items():
                for key in ("fetch_error", "settle_error", "driver_error"):
                    if info.get(key):
                        reasons.append(f"{receiver.name}/{action}: {info[key]}")
                if not info.get("joined", True):
                    reasons.append(f"{receiver.name}/{action}: joining its consumer group")
        loops = self._loop_health()
        if self.started and not self.stopping:
            for name, health in loops.items():
                reasons.extend(f"{name}: {problem}" for problem in health.get("problems", ()))
        ready = not reasons
        body = {"ready": ready, "reason": "; ".join(reasons) or "ok", "receivers": receivers}
        if loops:
            body["loops"] = {
                name: {k: v for k, v in health.items() if k != "problems"}
                for name, health in loops.items()
            }
        return ready, body

    def _receivers(self) -> list[Any]:
        return list(self.components.receivers) if self.components is not None else []

    def _loop_health(self) -> dict[str, dict[str, Any]]:
        """``health()`` of each relay and cleaner that has one, by a name unique here."""
        out: dict[str, dict[str, Any]] = {}
        loops = self.components.loops if self.components is not None else []
        for loop in loops:
            health = getattr(loop, "health", None)
            if not callable(health):
                continue
            report: dict[str, Any] = health()
            name = str(report.get("relay") or report.get("cleaner") or type(loop).__name__)
            unique, n = name, 1
            while unique in out:
                n += 1
                unique = f"{name} #{n}"
            out[unique] = report
        return out
