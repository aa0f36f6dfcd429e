"""The receiver: subscribe handlers, start, run, and close with a drain.

Per subscription the receiver runs one fetch loop, a pool of ``concurrency`` workers over
per-key lanes, and one settle loop that writes settled deliveries to the driver in batches.
The invariant, whatever a record holds, a handler raises or the driver does:

    every delivery fetched ends acked, dead-lettered (then acked) or given back (nacked),
    and that settlement is written to the driver, retried with back-off until it is;
    until then it counts as unsettled and holds a place of the prefetch window.

When work cannot progress (fetching or settling fails, a delivery stays unsettled longer
than ``stall_timeout``, a loop died, the driver ended the subscription) ``health()`` says
unhealthy with the reason; when it can never progress again (the driver was closed under
it, a fatal broker error) the receiver closes itself and ``run()``/``wait_closed()`` raise
:class:`~hexa_event.errors.ReceiverFailedError`, as does leaving ``async with receiver:``
(when no other exception leaves it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import re
import time
from collections import deque
from collections.abc import Callable, Coroutine, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice, repeat
from typing import Any, TypeVar

from . import batching
from .context import Context
from .dispatch import Counters, Dispatcher, PermanentPredicate, Route, permanent_predicate
from .driver import (
    Delivery,
    Driver,
    Outcome,
    RecordBatch,
    StartPosition,
    Subscription,
    SubscriptionSpec,
)
from .errors import ClosedError, ConfigurationError, DriverError, ReceiverFailedError
from .event import Message
from .fetched import Fetched, RecordItem
from .lanes import Lanes
from .middleware import (
    Handler,
    Middleware,
    Overruns,
    SyncHandler,
    as_async,
    chain,
    check_handler,
)
from .numbers import check_number, duration
from .propagation import Propagator, default_propagator
from .publishing import PublishMiddleware, pipeline
from .retry import RetryPolicy
from .stuck import where
from .threads import ABANDON
from .wire import Chain, DedupIds, error_text

logger = logging.getLogger(__name__)

H = TypeVar("H", bound=Callable[..., Any])
T = TypeVar("T")

_NAME_RE = re.compile(r"^[A-Za-z0-9._\-]+$")
_BACKOFF = (0.1, 0.5, 1.0, 2.0, 5.0)
_FINAL_SETTLE_TIMEOUT = 10.0
_SUBSCRIPTION_CLOSE_TIMEOUT = 10.0
"""How long close() waits for the driver to close the subscriptions (all at once): one
that does not end by then is cancelled and left to the driver's own close."""
_UNWIND_GRACE = 1.0
"""How long a handler cancelled at the end of the drain may take to unwind (only a
coroutine that suppresses its cancellation can use it up; it is then left behind)."""
_LAG_TIMEOUT = 10.0
MIN_LAG_INTERVAL = 0.1
"""The shortest ``lag_interval``: each sample queries the broker for every action."""
_PUBLISH_ERROR_KEPT = 60.0
"""How long health reports a failed publish of a retry copy or dead letter when none was
tried since (a failing one is tried again within 30 s: see dispatch's back-off)."""
_WAITING_PER_PREFETCH = 4
"""Deliveries held until due (beside the prefetch window) per place of the window."""
_RELEASE_AFTER = 1.0
"""Seconds after which a single handler's record batch still out is released
(:mod:`hexa_event.fetched`): a slow record holds its own place in the window and its own
partition's commit, not its whole batch's."""
MAX_CONCURRENCY = 10_000
"""The most handlers one subscription may run at once (its window of unsettled deliveries
is a few times that): more would only hold more records in memory, not run faster."""

_lane_of: Callable[[Delivery], Hashable] = operator.attrgetter("record.channel", "record.key")
"""A delivery's lane: one key of one channel (events of one key run one at a time, in order).
A batch handler's lanes are these pairs; see :func:`_keyed_lanes` for a single handler's."""


def _keyed_lanes(main: str | None) -> Callable[[Delivery], Hashable]:
    """The lane of a single handler's delivery: one key of one channel, as :data:`_lane_of`,
    named by the key alone on the ``main`` channel (the first subscribed; None for a
    pattern), by the pair on any other (retry channels, further channels). Same lanes, a
    cheaper name for most: a fetched record's key is a new string, and a pair of them
    hashed and compared per event cost more than the string (the fetch loop names them
    inline, the same way)."""

    def lane_of(delivery: Delivery) -> Hashable:
        record = delivery.record
        return record.key if record.channel == main else (record.channel, record.key)

    return lane_of


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
    lanes: Lanes[Delivery | RecordItem] | batching.BatchLanes | None = None
    lane_of: Callable[[Delivery], Hashable] = _lane_of
    """A delivery's lane in ``lanes`` (:data:`_lane_of`, or :func:`_keyed_lanes`)."""
    batch: batching.BatchPlan | None = None
    """Set for a batch handler (``subscribe(batch=...)``)."""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    unsettled: dict[Delivery, float] = field(default_factory=dict)
    """Deliveries fetched and not yet written back, with their fetch time (oldest first)."""
    waiting: dict[Delivery, float] = field(default_factory=dict)
    """Deliveries the core holds until their due time (a scheduled event, a retry copy, on
    drivers that cannot hold them back): not written back, but not stalled either."""
    pending: list[Delivery] = field(default_factory=list)
    """Settled deliveries waiting for the settle loop."""
    records: dict[RecordBatch, float] = field(default_factory=dict)
    """Record batches fetched and not yet written back (a batch handler on a driver with
    ``fetch_records``), with their stall clock: their fetch time, restarted when an
    in-place retry's back-off of their batch ends; ``records_out`` counts their records."""
    records_out: int = 0
    reads_records: bool = False
    """Set for a single handler on a driver with ``fetch_records``: its lanes are fed
    records of fetched batches (:mod:`hexa_event.fetched`) rather than deliveries."""
    pending_records: list[RecordBatch] = field(default_factory=list)
    """Settled record batches waiting for the settle loop."""
    settle_wake: asyncio.Event = field(default_factory=asyncio.Event)
    room: asyncio.Event = field(default_factory=asyncio.Event)
    fetch_error: str = ""
    """The last fetch failure while it persists (empty once fetching works again)."""
    settle_error: str = ""
    """The last failure to write settlements while it persists."""
    last_settle: bool = False
    """Set by close once nothing more can be settled: the settle loop ends when written."""
    lag: dict[str, int] | None = None
    """The group's lag per channel at the last sample (None: unknown or not sampled yet)."""
    lag_at: float | None = None
    """When ``lag`` was sampled (monotonic)."""
    lag_error: str = ""
    """Why the last sample failed, empty when it worked."""
    overruns: Overruns = field(default_factory=dict)
    """Sync handlers cancelled (``he.timeout``) whose thread runs on: their keys wait."""

    @property
    def in_flight(self) -> int:
        """Records fetched and not yet written back, each counted once (a record taken out
        of its batch counts as a delivery of its own, no longer in the batch)."""
        return len(self.unsettled) + len(self.waiting) + self.records_held

    @property
    def records_held(self) -> int:
        """The records of batches not yet written back, less those taken out of them."""
        return self.records_out - sum(len(batch.taken) for batch in self.records)

    @property
    def counters(self) -> Counters:
        return self.dispatcher.counters if self.dispatcher else Counters()


class Receiver:
    """Runs handlers for events. Subscribe first, then ``start()`` (or ``async with``).

    Guarantees: a handler's return acks its event and a raise nacks it (logged, then
    retried with back-off, then dead-lettered); events of one key reach a handler one at a
    time in order; ``close()`` stops fetching, lets running and queued handlers finish
    within ``drain_timeout``, gives unfinished events back, writes every settlement and
    closes the subscriptions. Closing twice is harmless.

    The bound of ``close()``: it returns about ``drain_timeout`` after it was called if
    handlers are still running then. Those are cancelled; a sync handler's thread cannot
    be stopped, so it is abandoned (it runs on, its result is ignored). Every event not
    finished is given back (delivered again, never acked). Add the time to write the last
    settlements (at most 10 s when the driver cannot), to close the subscriptions (at most
    10 s: one whose close hangs is left to the driver's close) and, only for a coroutine
    handler that suppresses its cancellation, 1 s before it is left behind; a driver's
    fetch, settle or lag call that ignores its cancellation costs 1 s more (once for the
    fetch and lag loops, once for the settle loops) and is left behind, named in the log
    (what it did not settle is delivered again).

    ``concurrency`` bounds the handlers running at once per subscription; up to four times
    as many events (at least 256) may be held unsettled, and beside them up to 4 times that
    many waiting for their due time where the driver cannot hold them back (scheduled events
    and retry copies on Kafka and STAN). ``stall_timeout`` is how long a delivery may stay
    unsettled (after its due time, and after an in-place retry's back-off; those of its key
    waiting behind it likewise) before ``health()`` reports a stall. Every
    ``lag_interval`` seconds (at least 0.1) a background task asks each subscription for
    its group's lag (:meth:`~hexa_event.driver.Subscription.lag`); ``health()`` reports the
    last sample and its age.

    Retry copies and dead letters go to the driver through ``publish_middlewares`` (see
    :mod:`hexa_event.publishing`), the first listed outermost.
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
        stall_timeout: float = 300.0,
        lag_interval: float = 5.0,
        publish_middlewares: Sequence[PublishMiddleware] = (),
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigurationError("Receiver needs a name: the service it runs in")
        check_number(
            "Receiver concurrency", concurrency, integer=True, minimum=1, maximum=MAX_CONCURRENCY
        )
        check_number("Receiver drain_timeout", drain_timeout, minimum=0)
        check_number("Receiver stall_timeout", stall_timeout, minimum=0, above=True)
        check_number("Receiver lag_interval (seconds)", lag_interval, minimum=MIN_LAG_INTERVAL)
        self.name = name
        self.driver = driver
        self._middlewares = tuple(middlewares)
        self._publish_middlewares = tuple(publish_middlewares)
        self._propagator = propagator or default_propagator()
        self._drain_timeout = float(drain_timeout)
        self._stall_timeout = float(stall_timeout)
        self._concurrency = concurrency
        self._lag_interval = float(lag_interval)
        self._lag_task: asyncio.Task[None] | None = None
        self._subs: dict[str, SubscriptionInfo] = {}
        self._closing = asyncio.Event()
        self._closed = asyncio.Event()
        self._started = False
        self._close_lock = asyncio.Lock()
        self._closer: asyncio.Task[None] | None = None
        """The closing, in a task of its own (see :meth:`close`)."""
        self._hurry = asyncio.Event()
        self._failure: ReceiverFailedError | None = None
        self._behind: set[asyncio.Future[None]] = set()
        """Closings of subscriptions made by a subscribe left behind (held: not collected)."""

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
        dedup_ids: DedupIds = "event",
        retry_base: str | None = None,
        handler: Handler | SyncHandler | None = None,
        batch: batching.Batch | None = None,
    ) -> Callable[[H], H]:
        """Register ``handler`` (or decorate one) for a channel, several, or a pattern.

        ``action`` names what the handler does: it is the consumer group (unless ``group``
        overrides it), the base of the retry channels ``<action>.retry.N`` and the dead-letter
        channel ``<action>.dlq`` (unless ``retry_base`` sets another base, as Go's
        ``RetryTopic``), and the action of the dedup keys. ``payload`` is the type the body
        decodes to (dataclass, pydantic model, msgspec Struct, protobuf message, ``bytes``;
        None gives the codec's natural type). ``permanent`` lists exception types (or a
        predicate) that skip retries. ``options`` are the driver's own typed options.
        ``dedup_ids="go"`` makes the dedup keys Go hexa-event's (HEXA_EVENT_ID is the
        broker coordinates; root id and action come from the headers), for actions shared
        with Go services. ``batch=he.Batch(max_size, max_wait)`` makes it a batch handler,
        called as ``handler(ctx, msgs)`` with a list (see :mod:`hexa_event.batching`).
        """
        _check_name("action", action)
        if group is not None:
            _check_name("group", group)
        if retry_base is not None:
            _check_name("retry_base", retry_base)
        if dedup_ids not in ("event", "go"):
            raise ConfigurationError(f"dedup_ids must be 'event' or 'go', got {dedup_ids!r}")
        if start not in ("earliest", "latest"):
            raise ConfigurationError(f"start must be 'earliest' or 'latest', got {start!r}")
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
        if any(not isinstance(c, str) or not c or "\x00" in c for c in channels):
            raise ConfigurationError("channel names must be non-empty strings without NUL")
        if not channels and not pattern:
            raise ConfigurationError("subscribe() needs a channel, a list of channels or pattern=")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigurationError(
                f"retry takes he.RetryPolicy(...), got {retry!r}; "
                "RetryPolicy(max_retries=0) for no retries"
            )
        if pattern is not None:
            if not isinstance(pattern, str):
                raise ConfigurationError(f"pattern must be a regular expression, got {pattern!r}")
            if not self.driver.features.patterns:
                raise ConfigurationError(
                    f"the {self.driver.features.name} driver does not support channel "
                    "patterns; list the channels instead"
                )
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigurationError(
                    f"pattern {pattern!r} is not a regular expression: {exc}"
                ) from exc
        if concurrency is not None:
            check_number(
                "subscribe() concurrency",
                concurrency,
                integer=True,
                minimum=1,
                maximum=MAX_CONCURRENCY,
            )
        if self._closing.is_set():
            raise ClosedError("this receiver was closed; make a new one")
        if self._started:
            raise ConfigurationError("subscribe before start(): this receiver already runs")
        policy = retry or RetryPolicy()
        is_permanent = permanent_predicate(permanent)
        limit = concurrency or (1 if batch is not None else self._concurrency)
        chain_names = Chain(
            action=action, base=retry_base or action, policy=policy, dedup_ids=dedup_ids
        )

        def register(fn: H) -> H:
            where = f"subscribe(action={action!r})"
            plan = None
            overruns: Overruns = {}
            if batch is not None:  # a batch handler: middlewares wrap single handlers only
                plan = batching.plan(batch, fn, where=where, overruns=overruns)
                if plan.batch.max_wait >= self._stall_timeout:
                    raise ConfigurationError(
                        f"{where}: Batch max_wait ({plan.batch.max_wait:g}s) must be below the "
                        f"receiver's stall_timeout ({self._stall_timeout:g}s): a batch filling "
                        "that long reads as a stall in health(); lower max_wait or raise "
                        "stall_timeout"
                    )
                wrapped = plan.single(action)
            else:
                check_handler(fn, where=where)
                batching.refuse_batch_signature(fn, where=where)
                wrapped = chain(as_async(fn, overruns), self._middlewares)
            route = Route(
                chain=chain_names,
                handler=wrapped,
                payload_type=payload,
                is_permanent=is_permanent,
                propagator=self._propagator,
            )
            retry_channels = (
                ()
                if policy.in_place
                else tuple(chain_names.retry_channel(n) for n in range(1, policy.max_retries + 1))
            )
            window = max(4 * limit, 256)
            if plan is not None:
                window = max(window, plan.batch.window(limit))
            # Where the broker does not hold scheduled events, the core holds them (or nacks
            # them, which STAN keeps in flight): the driver may hand out that many more, so
            # that they never stop the other keys.
            features = self.driver.features
            held = 0 if features.scheduled_publish else _WAITING_PER_PREFETCH * window
            spec = SubscriptionSpec(
                group=group or action,
                channels=channels + retry_channels,
                pattern=pattern,
                start=start,
                prefetch=window + held,
                options=options,
                retry_channels=retry_channels,
            )
            self._subs[action] = SubscriptionInfo(
                action=action,
                channels=channels,
                pattern=pattern,
                spec=spec,
                route=route,
                concurrency=limit,
                prefetch=window,
                batch=plan,
                overruns=overruns,
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
        """Provision channels, join every group and start handling. Raises on refusal.

        A :meth:`close` meanwhile ends it early, even while the driver provisions or joins
        (that step is cancelled): it returns, and what it joined it leaves."""
        if self._closing.is_set():
            raise ClosedError("this receiver was closed; make a new one")
        if self._started:
            return
        if not self._subs:
            raise ConfigurationError("start() with no subscriptions: subscribe a handler first")
        self._started = True
        publish = pipeline(self.driver.publish, self._publish_middlewares)
        try:
            for info in self._subs.values():
                await self._unless_closing(
                    self.driver.provision(
                        (*info.spec.channels, info.route.chain.dead_letter_channel)
                    )
                )
                subscription = None
                if not self._closing.is_set():
                    subscription = await self._unless_closing(self.driver.subscribe(info.spec))
                if self._closing.is_set():  # closed meanwhile: close() did not see this one
                    if subscription is not None:
                        await self._close_subscriptions({info.action: subscription})
                    return
                assert subscription is not None
                info.subscription = subscription
                if info.batch is not None:
                    dispatcher = batching.BatchDispatcher(
                        publish,
                        self.driver.features,
                        info.route,
                        self._closing,
                        info.batch,
                    )
                    info.dispatcher = dispatcher
                    info.lanes = batching.BatchLanes(
                        dispatcher,
                        info.batch.batch,
                        info,
                        self._closing,
                        workers=info.concurrency,
                        name=f"hexa-event:{info.action}",
                        records=info.concurrency == 1
                        and dispatcher.opens_records
                        and batching.fetches_records(info.subscription),
                    )
                else:
                    info.dispatcher = Dispatcher(
                        publish, self.driver.features, info.route, self._closing
                    )
                    info.reads_records = info.dispatcher.reads_first and (
                        batching.fetches_records(subscription)
                    )
                    info.lanes = Lanes(
                        None,
                        info.concurrency,
                        name=f"hexa-event:{info.action}",
                        run_lane=self._work(info),
                    )
                    info.lane_of = _keyed_lanes(info.channels[0] if info.channels else None)
                info.room.set()
                info.tasks = [
                    asyncio.create_task(self._fetch_loop(info), name=f"hexa-fetch:{info.action}"),
                    asyncio.create_task(self._settle_loop(info), name=f"hexa-settle:{info.action}"),
                ]
        except BaseException:
            await self.close()
            raise
        self._lag_task = asyncio.create_task(self._sample_lag(), name=f"hexa-lag:{self.name}")
        logger.info("receiver %s started: %s", self.name, ", ".join(self._subs))

    async def _unless_closing(self, step: Coroutine[Any, Any, T]) -> T | None:
        """Await ``step`` (a provision or subscribe) unless :meth:`close` begins first: then
        it is cancelled and None returned, so a driver that hangs there never holds a
        close, or a service's stop, up (one that ignores its cancellation is left behind
        after a second)."""
        task = asyncio.ensure_future(step)
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait((task, closing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            if not task.done():  # closing, or the caller is cancelled: so is the step
                task.cancel()
                await asyncio.wait((task,), timeout=_UNWIND_GRACE)
                if not task.done():
                    logger.error(
                        "receiver %s: the driver's provision or subscribe ignores its "
                        "cancellation; left behind, waiting in %s (a subscription it still "
                        "makes is closed when it does)",
                        self.name,
                        where(task) or "?",
                    )
                    task.add_done_callback(self._ended_behind)
        if not task.done() or task.cancelled():
            return None
        if self._closing.is_set() and task.exception() is not None:
            return None  # cut by close: not the driver's failure
        return task.result()

    def _ended_behind(self, task: asyncio.Future[Any]) -> None:
        """A provision or subscribe left behind (see :meth:`_unless_closing`) ended: a
        subscription it made is closed (nobody else owns it: its group membership and
        prefetched events would be held until the driver closes), an error only logged."""
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            logger.info(
                "receiver %s: a provision or subscribe left behind ended: %s",
                self.name,
                error_text(error),
            )
            return
        result = task.result()
        if isinstance(result, Subscription):
            logger.warning(
                "receiver %s: a subscribe left behind at close made a subscription; closing it",
                self.name,
            )
            closing = asyncio.ensure_future(self._close_subscriptions({"(left behind)": result}))
            self._behind.add(closing)
            closing.add_done_callback(self._behind.discard)

    def _work(self, info: SubscriptionInfo) -> Callable[[deque[Delivery | RecordItem]], Any]:
        """The lane runner of a single-message subscription (see :data:`lanes.LaneWork`):
        each item of the lane in turn, handled here (one coroutine per event: the
        handler's). A record of a fetched batch (:mod:`hexa_event.fetched`) was read when
        fetched; on a failure it is taken out of its batch and goes on as a delivery. A
        delivery's common case is read by ``Dispatcher.first``, any other goes through
        ``handle_careful``. Settled deliveries go to the settle loop."""
        dispatcher = info.dispatcher
        assert dispatcher is not None
        handle, first, failed = dispatcher.handle_careful, dispatcher.first, dispatcher.failed
        handler, counters = info.route.handler, dispatcher.counters
        pending = info.pending
        wake = info.settle_wake
        unsettled, waiting = info.unsettled, info.waiting
        closing = self._closing
        ack, nack = Outcome.ACK, Outcome.NACK

        def restart(items: Iterable[Delivery | RecordItem]) -> None:
            """Their stall clocks start now: they waited behind the head of their lane (held
            until due, or backing off for an in-place retry), which does not stall them."""
            now = time.monotonic()
            for item in items:
                if isinstance(item, tuple):
                    item[0].restart()
                elif unsettled.pop(item, None) is not None:
                    unsettled[item] = now

        def resumed(delivery: Delivery) -> None:  # an in-place retry's back-off ended
            lanes = info.lanes
            assert isinstance(lanes, Lanes)
            restart(lanes.queued(info.lane_of(delivery)))

        dispatcher.resumed = resumed

        def left_behind(queue: deque[Delivery | RecordItem]) -> None:
            """A handler left behind at close has ended: close gave back every item of its
            lane (its own included), so the lane is dropped and nothing more runs."""
            queue.clear()
            logger.warning(
                "receiver %s: a handler of %s left behind at close has ended; its event was "
                "given back and is delivered again",
                self.name,
                info.action,
            )

        async def run_lane(queue: deque[Delivery | RecordItem]) -> float | None:
            failure: tuple[Context, Message[Any], BaseException] | None = None
            while queue:
                item = queue[0]
                if item.__class__ is tuple:  # a record of a fetched batch, read already
                    fetched, index, ctx, message = item  # type: ignore[misc]
                    try:
                        await handler(ctx, message)
                    except BaseException as exc:
                        released = fetched.out.pop(index, None) if fetched.out else None
                        if released is None and fetched.batch.outcome is None:
                            released = fetched.take(index)
                        if released is None or released.outcome is not None:
                            left_behind(queue)  # close gave it back
                            return None
                        delivery = queue[0] = released
                        failure = ctx, message, exc  # failed() settles it below
                    else:
                        if fetched.out and index in fetched.out:  # released: settled alone
                            delivery = fetched.out.pop(index)
                            if delivery.outcome is not None:  # close gave it back
                                left_behind(queue)
                                return None
                            counters.handled += 1
                            delivery.outcome = ack
                            if dispatcher.given_back:
                                dispatcher.went_through(message.id)
                            pending.append(delivery)
                            wake.set()
                            queue.popleft()
                            continue
                        if fetched.batch.outcome is not None:  # close gave it back
                            left_behind(queue)
                            return None
                        counters.handled += 1
                        fetched.left -= 1  # fetched.done(), inline
                        if not fetched.left:
                            fetched.finish()
                        if dispatcher.given_back:
                            dispatcher.went_through(message.id)
                        queue.popleft()
                        continue
                else:
                    delivery = item  # type: ignore[assignment]
                if waiting and waiting.pop(delivery, None) is not None:
                    unsettled[delivery] = time.monotonic()  # its stall clock starts when due
                    restart(islice(queue, 1, None))  # so do those of its key behind it
                    info.room.set()
                if delivery.outcome is None:
                    try:
                        if failure is not None:  # a record's handler failed: settle its delivery
                            ctx, message, raised = failure
                            failure = None
                            await failed(delivery, ctx, message, raised)
                            due = None
                        elif (read := first(delivery)) is not None:  # what handle() does for
                            # it, here: no coroutine of ours, and no check of a due time
                            ctx, message = read
                            try:
                                await handler(ctx, message)
                            except BaseException as exc:
                                await failed(delivery, ctx, message, exc)
                            else:
                                counters.handled += 1
                                if delivery.outcome is None:  # delivery.ack(), inline
                                    delivery.outcome = ack
                                elif closing.is_set():  # left behind: close gave it back
                                    left_behind(queue)
                                    return None
                                else:
                                    delivery.ack()  # raises AlreadySettledError
                                if dispatcher.given_back:
                                    dispatcher.went_through(message.id)
                                if not pending:  # the first since the settle loop took the
                                    wake.set()  # list: wake it
                                pending.append(delivery)
                                queue.popleft()
                                continue
                            due = None
                        else:
                            due = await handle(delivery)
                    except (Exception, asyncio.CancelledError) as exc:
                        if isinstance(exc, asyncio.CancelledError) and _cancelling():
                            if delivery.outcome is not None:
                                pending.append(delivery)
                                wake.set()
                            raise
                        logger.exception("handling a delivery failed (action=%s)", info.action)
                        if delivery.outcome is None:
                            delivery.nack(1.0)
                        due = None
                    if due is not None:
                        if unsettled.pop(delivery, None) is not None:
                            waiting[delivery] = due
                            info.room.set()  # it left the window
                        return due
                    if delivery.outcome is nack and closing.is_set():
                        for position in range(1, len(queue)):  # given back at shutdown: so is
                            later = queue[position]  # the rest of its key (never ahead of it)
                            if isinstance(later, tuple):
                                later = queue[position] = later[0].delivery(later[1])
                            if later.outcome is None:
                                later.nack()
                if not pending:  # the first since the settle loop took the list: wake it
                    wake.set()
                pending.append(delivery)
                queue.popleft()
            return None

        return run_lane

    async def _fetch_loop(self, info: SubscriptionInfo) -> None:
        subscription, lanes = info.subscription, info.lanes
        assert subscription is not None
        assert lanes is not None
        failures = 0
        unsettled, waiting = info.unsettled, info.waiting
        most_waiting = _WAITING_PER_PREFETCH * info.prefetch
        main = info.channels[0] if info.channels else None  # see _keyed_lanes
        records = isinstance(lanes, batching.BatchLanes) and lanes.records
        single_records = info.reads_records and isinstance(lanes, Lanes)
        loop = asyncio.get_running_loop()
        dispatcher = info.dispatcher
        assert dispatcher is not None
        while not self._closing.is_set():
            room = min(info.prefetch - len(unsettled), most_waiting - len(waiting))
            if records:
                room = min(room - info.records_held, lanes.fetch_room())  # type: ignore[union-attr]
            elif single_records:  # a quarter of the window at most: fetched while the
                room = min(room - info.records_held, info.prefetch // 4)  # rest is handled
            if room <= 0:
                info.room.clear()
                await info.room.wait()
                continue
            try:
                if records or single_records:
                    batch = await subscription.fetch_records(room)
                    if batch is not None:
                        info.records[batch] = time.monotonic()
                        info.records_out += len(batch)
                        failures = 0
                        info.fetch_error = ""
                        if records:
                            lanes.submit_records(batch)  # type: ignore[union-attr]
                            continue
                        fetched = Fetched(batch, info)
                        fetched.timer = loop.call_later(
                            _RELEASE_AFTER, self._release, info, fetched
                        )
                        read, odd = dispatcher.first_records(batch, fetched)
                        items: list[Any] = read
                        for index in odd:  # records the first pass does not read
                            items[index] = fetched.take(index)
                        lanes.submit_lanes(  # type: ignore[union-attr]
                            [
                                key if channel == main else (channel, key)
                                for channel, key in zip(batch.channels, batch.keys, strict=True)
                            ],
                            items,
                        )
                        continue
                    deliveries: Sequence[Delivery] = ()
                else:
                    deliveries = await subscription.fetch(room)
            except asyncio.CancelledError:
                raise
            except DriverError as exc:
                if not exc.retriable:
                    self._fail(info, f"the driver cannot go on: {error_text(exc)}")
                    return
                failures = await self._fetch_failed(info, exc, failures)
                continue
            except Exception as exc:
                failures = await self._fetch_failed(info, exc, failures)
                continue
            failures = 0
            info.fetch_error = ""
            if not deliveries:
                if not self._closing.is_set():
                    self._fail(
                        info,
                        "the subscription ended while the receiver was running (was the "
                        "driver closed under it?); close the receiver before the driver",
                    )
                return
            unsettled.update(zip(deliveries, repeat(time.monotonic())))  # (no dict between)
            if isinstance(lanes, Lanes):  # each delivery's lane (_keyed_lanes), read inline
                lanes.submit_lanes(
                    [
                        r.key if (r := d.record).channel == main else (r.channel, r.key)
                        for d in deliveries
                    ],
                    deliveries,
                )
            else:
                for delivery in deliveries:
                    lanes.submit(_lane_of(delivery), delivery)

    def _release(self, info: SubscriptionInfo, fetched: Fetched) -> None:
        """A record batch still out ``_RELEASE_AFTER`` s after its fetch: its unfinished
        records are taken out (:meth:`Fetched.release`), so the batch is acked for the
        others. Nothing once it is settled, or while closing (close gives it back)."""
        if fetched.batch.outcome is not None or self._closing.is_set() or info.lanes is None:
            return
        fetched.release(
            [
                item[1]
                for item in info.lanes.items()
                if isinstance(item, tuple) and item[0] is fetched and item[1] not in fetched.out
            ]
        )

    async def _fetch_failed(self, info: SubscriptionInfo, exc: Exception, failures: int) -> int:
        delay = _BACKOFF[min(failures, len(_BACKOFF) - 1)]
        info.fetch_error = f"{type(exc).__name__}: {error_text(exc)}"
        logger.warning(
            "fetch failed for action %s (%s); retrying in %.1fs",
            info.action,
            info.fetch_error,
            delay,
        )
        await self._pause(delay)
        return failures + 1

    async def _settle_loop(self, info: SubscriptionInfo) -> None:
        subscription = info.subscription
        assert subscription is not None
        failures = 0
        while True:
            await info.settle_wake.wait()
            info.settle_wake.clear()  # whoever makes ``pending`` non-empty sets it again
            while info.pending or info.pending_records:
                batch = info.pending[:]
                info.pending.clear()
                records = info.pending_records[:]
                info.pending_records.clear()
                try:
                    if records:
                        await subscription.settle_records(records)
                    if batch:
                        await subscription.settle(batch)
                except asyncio.CancelledError:
                    info.pending[:0] = batch
                    info.pending_records[:0] = records
                    raise
                except Exception as exc:
                    info.pending[:0] = batch
                    info.pending_records[:0] = records
                    info.settle_error = f"{type(exc).__name__}: {error_text(exc)}"
                    if isinstance(exc, DriverError) and not exc.retriable:
                        if not self._closing.is_set():  # (closing: its last settle says so)
                            self._fail(
                                info, f"the driver cannot write settlements: {error_text(exc)}"
                            )
                        return
                    delay = _BACKOFF[min(failures, len(_BACKOFF) - 1)]
                    failures += 1
                    logger.warning(
                        "writing %d settlements failed for action %s (%s); retrying in %.1fs",
                        len(batch),
                        info.action,
                        info.settle_error,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    continue
                failures = 0
                info.settle_error = ""
                for written in records:
                    if info.records.pop(written, None) is not None:
                        info.records_out -= len(written)
                unsettled, waiting = info.unsettled, info.waiting
                if waiting:
                    for delivery in batch:
                        if unsettled.pop(delivery, None) is None:
                            waiting.pop(delivery, None)
                else:  # each popped in one C loop
                    deque(map(unsettled.pop, batch, repeat(None)), maxlen=0)
                info.room.set()
            if info.last_settle:
                return  # close gave back what was left and everything is written

    async def _sample_lag(self) -> None:
        """Ask every subscription for its group's lag, now and every ``lag_interval``."""
        while not self._closing.is_set():
            for info in list(self._subs.values()):
                subscription = info.subscription
                if subscription is None or self._closing.is_set():
                    continue
                try:
                    async with asyncio.timeout(max(self._lag_interval, _LAG_TIMEOUT)):
                        sample = await subscription.lag()
                    lag = None if sample is None else {c: int(n) for c, n in sample.items()}
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    error = f"{type(exc).__name__}: {error_text(exc)}"
                    if error != info.lag_error:  # once per new problem, not every interval
                        logger.warning("cannot read the lag of %s: %s", info.action, error)
                    info.lag_error = error
                    continue
                info.lag = lag
                info.lag_at = time.monotonic()
                info.lag_error = ""
            await self._pause(self._lag_interval)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._closing.wait()

    def _fail(self, info: SubscriptionInfo, reason: str) -> None:
        message = f"receiver {self.name!r}, action {info.action!r}: {reason}"
        logger.error("%s; closing the receiver", message)
        if self._failure is None:
            self._failure = ReceiverFailedError(message)
        asyncio.get_running_loop().create_task(self.close(), name=f"hexa-close:{self.name}")

    async def close(self) -> None:
        """Stop fetching, drain handlers within the timeout, write settlements, close.

        The closing runs in a task of its own, once: cancelling a caller (a timeout around
        ``close()``, a handler that closes its own receiver and is cancelled at the end of
        the drain) ends its wait, never the closing half-way."""
        if self._closer is None:
            self._closing.set()  # at once: start() and the loops see it before the task runs
            self._closer = asyncio.get_running_loop().create_task(
                self._close(), name=f"hexa-closing:{self.name}"
            )
        await asyncio.shield(self._closer)

    async def _close(self) -> None:
        async with self._close_lock:  # (one closer task: kept for safety)
            if self._closed.is_set():
                return
            self._closing.set()
            current = asyncio.current_task()
            fetchers = [
                info.tasks[0]
                for info in self._subs.values()
                if info.tasks and info.tasks[0] is not current
            ]
            if self._lag_task is not None:
                fetchers.append(self._lag_task)
            await self._stop_tasks(fetchers, "fetching or sampling the lag")
            lanes = [info.lanes for info in self._subs.values() if info.lanes is not None]
            for lane in lanes:
                lane.wake_parked()
            draining = time.monotonic()
            drained = await self._drain(lanes)
            if not drained:
                logger.warning(
                    "receiver %s: handlers still running after %.1fs (%s); giving their "
                    "events back",
                    self.name,
                    time.monotonic() - draining,
                    "the drain was cut short: hurry(), a second stop signal"
                    if self._hurry.is_set()
                    else f"drain_timeout={self._drain_timeout:g}",
                )
            for info in self._subs.values():
                if info.lanes is None:
                    continue
                for task in await info.lanes.stop(_UNWIND_GRACE, message=ABANDON):
                    logger.error(
                        "receiver %s: a handler of %s ignores cancellation; left behind, "
                        "waiting in %s",
                        self.name,
                        info.action,
                        where(task) or task.get_name(),
                    )
                unfinished: dict[Fetched, list[int]] = {}
                for item in info.lanes.items():
                    if isinstance(item, tuple):  # a record of a fetched batch, not handled
                        unfinished.setdefault(item[0], []).append(item[1])
                    elif item.outcome is None:
                        item.nack()
                        info.pending.append(item)
                for fetched, indexes in unfinished.items():
                    info.pending += fetched.give_back(indexes)
                info.last_settle = True
                info.settle_wake.set()
            await self._final_settle()
            await self._stop_tasks(
                [task for info in self._subs.values() for task in info.tasks],
                "writing settlements",
            )
            await self._close_subscriptions(
                {a: i.subscription for a, i in self._subs.items() if i.subscription is not None}
            )
            self._closed.set()
            logger.info("receiver %s closed", self.name)

    async def _stop_tasks(self, tasks: list[asyncio.Task[None]], doing: str) -> None:
        """Cancel ``tasks`` and wait ``_UNWIND_GRACE`` for them to end: a driver call that
        ignores its cancellation (a fetch or settle that hangs) must not hold close() up
        past its bound; such a task is named and left behind (what it did not settle is
        delivered again)."""
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=_UNWIND_GRACE)
        for task in late:
            logger.error(
                "receiver %s: %s (task %s) ignores its cancellation; left behind, waiting in "
                "%s (events it did not settle are delivered again)",
                self.name,
                doing,
                task.get_name(),
                where(task) or "?",
            )

    async def _close_subscriptions(self, subscriptions: dict[str, Subscription]) -> None:
        """Close them all at once, within ``_SUBSCRIPTION_CLOSE_TIMEOUT``: a driver's close
        that hangs must not hold close() up past its bound; one that does is cancelled and
        named (the driver's own close ends what it holds)."""
        closes = {
            asyncio.ensure_future(subscription.close()): action
            for action, subscription in subscriptions.items()
        }
        if not closes:
            return
        done, late = await asyncio.wait(closes, timeout=_SUBSCRIPTION_CLOSE_TIMEOUT)
        for task in done:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                logger.error("closing subscription %s failed", closes[task], exc_info=error)
        for task in late:
            task.cancel()
            logger.error(
                "receiver %s: closing the subscription of %s did not end within %.0fs; left "
                "to the driver's close (its events not settled are delivered again)",
                self.name,
                closes[task],
                _SUBSCRIPTION_CLOSE_TIMEOUT,
            )

    async def _drain(self, lanes: list[Lanes[Delivery | RecordItem] | batching.BatchLanes]) -> bool:
        """Wait for every lane to empty within ``drain_timeout``, or until :meth:`hurry`."""
        joined = asyncio.ensure_future(
            asyncio.gather(*(lane.join(within=self._drain_timeout) for lane in lanes))
        )
        hurried = asyncio.ensure_future(self._hurry.wait())
        try:
            await asyncio.wait((joined, hurried), return_when=asyncio.FIRST_COMPLETED)
        finally:
            hurried.cancel()
        if not joined.done():
            joined.cancel()
            await asyncio.gather(joined, return_exceptions=True)
            return False
        return all(joined.result())

    def hurry(self) -> None:
        """Cut the drain of a running (or coming) :meth:`close` short: running handlers are
        cancelled and queued events given back at once; what settled is still written."""
        self._hurry.set()

    async def _final_settle(self) -> None:
        infos = [info for info in self._subs.values() if info.tasks]
        if infos:
            await asyncio.wait([info.tasks[1] for info in infos], timeout=_FINAL_SETTLE_TIMEOUT)
        for info in infos:
            if not info.tasks[1].done():
                logger.error(
                    "receiver %s: writing the settlements of %s did not end within %.0fs; "
                    "given up (those not written, %d besides the call in flight, are "
                    "delivered again)",
                    self.name,
                    info.action,
                    _FINAL_SETTLE_TIMEOUT,
                    len(info.pending),
                )
            elif info.pending:
                logger.error(
                    "receiver %s: %d settlements of %s could not be written (%s); those "
                    "events will be delivered again",
                    self.name,
                    len(info.pending),
                    info.action,
                    info.settle_error or "settle loop stopped",
                )

    # -- health -------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """A snapshot for health checks: state, per action counters, membership, problems.

        Per action, ``lag`` is the group's records not yet settled (the sum over channels),
        ``lag_by_channel`` the same per channel (``"*"``: the driver counts only the whole
        subscription) and ``lag_age`` the seconds since that sample; ``lag`` is None while
        unknown (not sampled yet, the driver cannot tell, or the receiver closed);
        ``lag_error`` says why the last query failed (the previous sample stays, and
        ``lag_age`` grows). Once closed, no action is ``joined`` or ``alive``.

        ``healthy`` is True only while running with every action able to progress;
        ``reason`` says what is wrong otherwise.
        """
        state = "closed" if self._closing.is_set() else "running" if self._started else "new"
        closed = self._closed.is_set()  # (state says "closed" as soon as closing begins)
        actions: dict[str, Any] = {}
        reasons: list[str] = []
        if self._failure is not None:
            reasons.append(str(self._failure))
        now = time.monotonic()
        for action, info in self._subs.items():
            counters = info.counters
            status = info.subscription.status() if info.subscription is not None else None
            oldest = next(iter(info.unsettled.values()), None)
            if oldest is not None and now - oldest > self._stall_timeout and info.lanes is not None:
                # Keys behind an event held until due, or backing off in place, wait.
                resting = {*info.lanes.parked}
                lane_of = info.lane_of
                if info.dispatcher is not None and info.dispatcher.backing_off:
                    resting.update(map(lane_of, info.dispatcher.backing_off))
                if resting:
                    oldest = next(
                        (t for d, t in info.unsettled.items() if lane_of(d) not in resting), None
                    )
            fetched = None  # the oldest record batch that can stall (see _stalling)
            if info.records:
                stalling = _stalling(info)
                fetched = min((t for b, t in info.records.items() if stalling(b)), default=None)
            if fetched is not None and (oldest is None or fetched < oldest):
                oldest = fetched
            age = round(now - oldest, 3) if oldest is not None else 0.0
            problems: list[str] = []
            if info.fetch_error:
                problems.append(f"cannot fetch: {info.fetch_error}")
            if info.settle_error:
                problems.append(f"cannot write settlements: {info.settle_error}")
            if status is not None and status.error:
                problems.append(f"driver: {status.error}")
            dispatcher = info.dispatcher
            publish_error = ""
            if dispatcher is not None and dispatcher.publish_error:
                since = now - dispatcher.publish_failed_at
                if since < _PUBLISH_ERROR_KEPT:
                    publish_error = dispatcher.publish_error
                    problems.append(
                        f"cannot publish retry copies or dead letters: {publish_error} "
                        f"({since:.0f}s ago, none published since; the events are given "
                        "back and delivered again)"
                    )
            if len(info.waiting) >= _WAITING_PER_PREFETCH * info.prefetch:
                problems.append(_held_back(info.waiting))
            stalled = age > self._stall_timeout
            if stalled:
                problems.append(
                    f"a delivery has been unsettled for {duration(age)} (stall_timeout "
                    f"{duration(self._stall_timeout)}): a handler hangs or settlements stall"
                )
            if info.overruns:
                stalled = True
                overran = min(info.overruns.values(), key=operator.itemgetter(1))
                problems.append(
                    f"{len(info.overruns)} sync handler(s) still run after they were cancelled "
                    f"(he.timeout or a middleware's deadline), the oldest for "
                    f"{duration(now - overran[1])} on {overran[0]}: a thread cannot be "
                    "stopped, so its key waits until it returns (then it fails and is "
                    "retried); make the handler async or bound its own blocking calls"
                )
            alive = not closed
            lag = None if closed else info.lag  # not sampled any more: no stale gauge
            if state == "running":
                if any(task.done() for task in info.tasks):
                    problems.append("a fetch or settle loop stopped")
                    alive = False
                if info.lanes is not None and not info.lanes.workers_alive:
                    problems.append("a handler worker stopped")
                    alive = False
            actions[action] = {
                "in_flight": info.in_flight,
                "waiting": len(info.waiting),
                "handled": counters.handled,
                "failed": counters.failed,
                "retried": counters.retried,
                "dead_lettered": counters.dead_lettered,
                "poison": counters.poison,
                "republish_failures": counters.republish_failures,
                "publish_error": publish_error,
                "oldest_unsettled_age": age,
                "assignment": list(status.assignment) if status is not None else [],
                "joined": status is not None and status.joined and not closed,
                "lag": sum(lag.values()) if lag is not None else None,
                "lag_by_channel": dict(lag) if lag is not None else {},
                "lag_age": None if closed or info.lag_at is None else round(now - info.lag_at, 3),
                "lag_error": info.lag_error,
                "fetch_error": info.fetch_error,
                "settle_error": info.settle_error,
                "driver_error": status.error if status is not None else "",
                "stalled": stalled,
                "alive": alive,
                "problems": problems,
            }
            reasons.extend(f"{action}: {p}" for p in problems)
        healthy = state == "running" and not reasons
        if state != "running" and not reasons:
            reasons.append(f"receiver is {state}")
        return {
            "receiver": self.name,
            "state": state,
            "healthy": healthy,
            "reason": "; ".join(reasons),
            "actions": actions,
        }

    async def wait_closed(self) -> None:
        """Return once the receiver has closed; raise ReceiverFailedError if it failed."""
        await self._closed.wait()
        if self._failure is not None:
            raise self._failure

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

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        """Close; then, if the receiver failed (closed itself: see :meth:`wait_closed`) and
        no exception leaves the block already, raise its ReceiverFailedError."""
        await self.close()
        if exc_type is None and self._failure is not None:
            raise self._failure


def _stalling(info: SubscriptionInfo) -> Callable[[RecordBatch], bool]:
    """Whether a record batch out in ``info``'s lanes counts for health's stall clock.

    A batch handler's does unless its running batch waits out an in-place back-off. A
    single handler's does once settled and not written yet, or while a record of it is the
    head of a lane that is not resting (held until due, backing off): records behind another
    item wait for it, whose own clock counts."""
    lanes = info.lanes
    if isinstance(lanes, batching.BatchLanes):
        resting_records = lanes.resting_records
        return lambda batch: batch not in resting_records
    if not isinstance(lanes, Lanes):
        return lambda batch: True
    resting = {*lanes.parked}
    if info.dispatcher is not None and info.dispatcher.backing_off:
        resting.update(map(info.lane_of, info.dispatcher.backing_off))
    running = {
        head[0].batch
        for lane, head in lanes.heads()
        if isinstance(head, tuple) and lane not in resting
    }
    return lambda batch: batch.outcome is not None or batch in running


def _cancelling() -> bool:
    """Whether the running task is being cancelled (else a CancelledError is a failure)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _held_back(waiting: dict[Delivery, float]) -> str:
    """Why an action holding as many events until due as it may fetches nothing more."""
    first, last = (
        datetime.fromtimestamp(due, UTC).isoformat(timespec="seconds")
        for due in (min(waiting.values()), max(waiting.values()))
    )
    return (
        f"{len(waiting)} events wait for their due time ({first} to {last}), as many as it "
        "holds: it fetches nothing until the first is due, so events of every other key wait; "
        "schedule far-future events on an engine that holds them (Pulsar, JetStream, SQL) or "
        "raise subscribe(concurrency=), which makes its room larger"
    )


def _check_name(what: str, value: object) -> None:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise ConfigurationError(
            f"{what} must be a non-empty name of letters, digits, '.', '_' or '-', got {value!r}"
        )
