"""The receiver: subscribe handlers, start, and close with a drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .dispatch import Dispatcher, PermanentPredicate, Route, permanent_predicate
from .driver import Delivery, Driver, StartPosition, Subscription, SubscriptionSpec
from .errors import ClosedError, ConfigurationError
from .lanes import Lanes
from .middleware import Handler, Middleware, SyncHandler, as_async, chain, log_errors
from .propagation import Propagator, default_propagator
from .retry import RetryPolicy, dead_letter_channel, retry_channel

logger = logging.getLogger(__name__)

H = TypeVar("H", bound=Callable[..., Any])

_ACTION_RE = re.compile(r"^[A-Za-z0-9._\-]+$")
_FETCH_ERROR_BACKOFF = (0.1, 0.5, 1.0, 2.0, 5.0)


@dataclass(slots=True)
class SubscriptionInfo:
    """A registered handler and, once started, its live state."""

    action: str
    channels: tuple[str, ...]
    pattern: str | None
    spec: SubscriptionSpec
    route: Route
    concurrency: int
    prefetch: int
    dispatcher: Dispatcher | None = None
    subscription: Subscription | None = None
    lanes: Lanes[Delivery] | None = None
    loop_task: asyncio.Task[None] | None = None
    in_flight: int = 0
    room: asyncio.Event = field(default_factory=asyncio.Event)
    fetch_error: str = ""
    """The last fetch failure while it persists (empty once fetching works again)."""


class Receiver:
    """Runs handlers for events. Subscribe first, then ``start()`` (or ``async with``).

    Guarantees: a handler's return acks its event and a raise nacks it (logged, then
    retried with back-off, then dead-lettered); events of one key reach a handler one at a
    time in order; ``close()`` stops fetching, lets running handlers finish within
    ``drain_timeout``, gives unfinished events back to the broker and closes the
    subscriptions. Closing twice is harmless.

    ``concurrency`` bounds the handlers running at once per subscription; up to four times
    as many events (at least 256) may be held unsettled, so retry copies waiting out their
    back-off never stop other keys from running.
    """

    def __init__(
        self,
        driver: Driver,
        *,
        name: str,
        middlewares: Sequence[Middleware] = (),
        propagator: Propagator | None = None,
        drain_timeout: float = 30.0,
        concurrency: int = 64,
    ) -> None:
        if not name:
            raise ConfigurationError("Receiver needs a name: the service it runs in")
        if concurrency < 1:
            raise ConfigurationError("Receiver concurrency must be >= 1")
        self.name = name
        self.driver = driver
        self._middlewares = (log_errors, *middlewares)
        self._propagator = propagator or default_propagator()
        self._drain_timeout = drain_timeout
        self._concurrency = concurrency
        self._subs: dict[str, SubscriptionInfo] = {}
        self._closing = asyncio.Event()
        self._closed = asyncio.Event()
        self._started = False
        self._close_lock = asyncio.Lock()

    # -- registration -----------------------------------------------------------------------

    def subscribe(
        self,
        channel: str | Sequence[str] | None = None,
        *,
        action: str,
        payload: Any = None,
        pattern: str | None = None,
        group: str | None = None,
        retry: RetryPolicy | None = None,
        permanent: tuple[type[BaseException], ...] | PermanentPredicate | None = None,
        concurrency: int | None = None,
        start: StartPosition = "earliest",
        options: Any = None,
        handler: Handler | SyncHandler | None = None,
    ) -> Callable[[H], H]:
        """Register ``handler`` (or decorate one) for a channel, several, or a pattern.

        ``action`` names what the handler does: it is the consumer group (unless ``group``
        overrides it), the base of the retry channels ``<action>.retry.N`` and the dead-letter
        channel ``<action>.dlq``, and the action of the dedup keys. ``payload`` is the type
        the body decodes to (dataclass, pydantic model, msgspec Struct, protobuf message,
        ``bytes``; None gives the codec's natural type). ``permanent`` lists exception types
        (or a predicate) that skip retries. ``options`` are the driver's own typed options.
        """
        if not isinstance(action, str) or not _ACTION_RE.match(action):
            raise ConfigurationError(
                f"action must be a non-empty name of letters, digits, '.', '_' or '-', "
                f"got {action!r}"
            )
        if action in self._subs:
            raise ConfigurationError(
                f"action {action!r} is already subscribed in receiver {self.name!r}: give "
                "each handler its own action (two handlers of one action would share events)"
            )
        channels: tuple[str, ...]
        if channel is None:
            channels = ()
        elif isinstance(channel, str):
            channels = (channel,)
        else:
            channels = tuple(channel)
        if any(not isinstance(c, str) or not c for c in channels):
            raise ConfigurationError("channel names must be non-empty strings")
        if not channels and not pattern:
            raise ConfigurationError("subscribe() needs a channel, a list of channels or pattern=")
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigurationError(
                    f"pattern {pattern!r} is not a regular expression: {exc}"
                ) from exc
        if self._started:
            raise ConfigurationError("subscribe before start(): this receiver already runs")
        policy = retry or RetryPolicy()
        limit = concurrency or self._concurrency

        def register(fn: H) -> H:
            wrapped = chain(as_async(fn), self._middlewares)
            route = Route(
                action=action,
                handler=wrapped,
                payload_type=payload,
                retry=policy,
                is_permanent=permanent_predicate(permanent),
                propagator=self._propagator,
            )
            retry_channels = (
                ()
                if policy.in_place
                else tuple(retry_channel(action, n) for n in range(1, policy.max_retries + 1))
            )
            spec = SubscriptionSpec(
                group=group or action,
                channels=channels + retry_channels,
                pattern=pattern,
                start=start,
                prefetch=max(4 * limit, 256),
                options=options,
            )
            self._subs[action] = SubscriptionInfo(
                action=action,
                channels=channels,
                pattern=pattern,
                spec=spec,
                route=route,
                concurrency=limit,
                prefetch=spec.prefetch,
            )
            return fn

        if handler is not None:
            register(handler)  # type: ignore[arg-type]
        return register

    @property
    def subscriptions(self) -> dict[str, SubscriptionInfo]:
        return dict(self._subs)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Provision channels, join every group and start handling. Raises on refusal."""
        if self._closing.is_set():
            raise ClosedError("this receiver was closed; make a new one")
        if self._started:
            return
        if not self._subs:
            raise ConfigurationError("start() with no subscriptions: subscribe a handler first")
        self._started = True
        try:
            for info in self._subs.values():
                await self.driver.provision((*info.spec.channels, dead_letter_channel(info.action)))
                info.subscription = await self.driver.subscribe(info.spec)
                info.dispatcher = Dispatcher(
                    self.driver, info.route, self._closing, asyncio.Semaphore(info.concurrency)
                )
                info.lanes = Lanes(self._worker(info))
                info.room.set()
                info.loop_task = asyncio.create_task(
                    self._fetch_loop(info), name=f"hexa-event:{info.action}"
                )
        except BaseException:
            await self.close()
            raise
        logger.info("receiver %s started: %s", self.name, ", ".join(self._subs))

    def _worker(self, info: SubscriptionInfo) -> Callable[[Delivery], Any]:
        dispatcher = info.dispatcher
        assert dispatcher is not None

        async def work(delivery: Delivery) -> None:
            try:
                if self._closing.is_set():
                    await delivery.nack()
                else:
                    await dispatcher.handle(delivery)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("settling a delivery failed (action=%s)", info.action)
            finally:
                info.in_flight -= 1
                info.room.set()

        return work

    async def _fetch_loop(self, info: SubscriptionInfo) -> None:
        subscription, lanes = info.subscription, info.lanes
        assert subscription is not None
        assert lanes is not None
        failures = 0
        while not self._closing.is_set():
            room = info.prefetch - info.in_flight
            if room <= 0:
                info.room.clear()
                await info.room.wait()
                continue
            try:
                deliveries = await subscription.fetch(room)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = _FETCH_ERROR_BACKOFF[min(failures, len(_FETCH_ERROR_BACKOFF) - 1)]
                failures += 1
                info.fetch_error = f"{type(exc).__name__}: {exc}"
                logger.warning(
                    "fetch failed for action %s (%s: %s); retrying in %.1fs",
                    info.action,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._closing.wait()
                continue
            failures = 0
            info.fetch_error = ""
            if not deliveries:
                return
            for delivery in deliveries:
                info.in_flight += 1
                lanes.submit((delivery.record.channel, delivery.record.key), delivery)

    async def close(self) -> None:
        """Stop fetching, drain running handlers within the timeout, close subscriptions."""
        async with self._close_lock:
            if self._closed.is_set():
                return
            self._closing.set()
            for info in self._subs.values():
                if info.loop_task is not None:
                    info.loop_task.cancel()
            for info in self._subs.values():
                if info.loop_task is not None:
                    await asyncio.gather(info.loop_task, return_exceptions=True)
            lanes = [info.lanes for info in self._subs.values() if info.lanes is not None]
            drained = all(
                await asyncio.gather(*(lane.join(within=self._drain_timeout) for lane in lanes))
            )
            if not drained:
                logger.warning(
                    "receiver %s: handlers still running after %.1fs; giving their events back",
                    self.name,
                    self._drain_timeout,
                )
                for lane in lanes:
                    await lane.cancel()
                    for delivery in lane.abandoned:
                        await _quiet_nack(delivery)
            for info in self._subs.values():
                if info.subscription is not None:
                    try:
                        await info.subscription.close()
                    except Exception:
                        logger.exception("closing subscription %s failed", info.action)
            self._closed.set()
            logger.info("receiver %s closed", self.name)

    def health(self) -> dict[str, Any]:
        """A snapshot for health checks: state, and per action its counters and last error.

        ``healthy`` is False when not running or when an action cannot fetch from the broker.
        """
        state = "closed" if self._closing.is_set() else "running" if self._started else "new"
        actions: dict[str, Any] = {}
        for action, info in self._subs.items():
            dispatcher = info.dispatcher
            actions[action] = {
                "in_flight": info.in_flight,
                "handled": dispatcher.handled if dispatcher else 0,
                "retried": dispatcher.retried if dispatcher else 0,
                "dead_lettered": dispatcher.dead_lettered if dispatcher else 0,
                "fetch_error": info.fetch_error,
            }
        healthy = state == "running" and not any(a["fetch_error"] for a in actions.values())
        return {"receiver": self.name, "state": state, "healthy": healthy, "actions": actions}

    async def wait_closed(self) -> None:
        """Return once the receiver has closed (``close()`` from elsewhere, or a signal)."""
        await self._closed.wait()

    async def run(self) -> None:
        """Start, then wait until closed; cancelling this closes the receiver first."""
        await self.start()
        try:
            await self.wait_closed()
        finally:
            await asyncio.shield(self.close())

    async def __aenter__(self) -> Receiver:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def _quiet_nack(delivery: Delivery) -> None:
    try:
        await delivery.nack()
    except Exception:
        logger.exception("nack failed during shutdown")
