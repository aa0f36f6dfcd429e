"""Batch handlers: ``subscribe(..., batch=Batch(max_size, max_wait))``.

A batch handler is called as ``handler(ctx, msgs)`` with up to ``max_size`` messages, at most
``max_wait`` seconds after the first of them was ready. The guarantees, on every driver:

- one key's events are in order within a batch, and a key is never in two running batches
  at once (so per-key order holds across batches); different keys share batches;
- the handler returns: every message is acked;
- it raises :class:`BatchFailed` naming some messages: those fail one by one (retry copies,
  then dead letters, exactly as single events; a retry copy comes back to this handler in a
  later batch), the others are acked;
- it raises anything else (any ``BaseException``): every message of the batch fails that way;
- poison records (undecodable) are dead-lettered one by one and never reach the handler;
  retry copies not yet due wait (their key with them) outside the batch;
- every delivery ends settled whatever the handler raises; close drains running batches.

Receiver middlewares wrap single-message handlers and are not applied to batch handlers;
counters and metrics (handled, failed, retried, dead-lettered) count messages, not batches.
A sync batch handler runs in a worker thread. With ``batch=``, ``concurrency`` bounds the
batches running at once (default 1).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import typing
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from . import wire
from .codecs import json_decoder
from .context import Context
from .dispatch import POISON, Dispatcher, Poison, Route
from .driver import Delivery, Features
from .errors import ConfigurationError
from .event import Message
from .lanes import wait_set
from .middleware import Handler, as_async, check_handler
from .numbers import check_number
from .propagation import DefaultPropagator
from .publishing import PublishCall

logger = logging.getLogger(__name__)

BatchHandler = Callable[[Context, list[Message[Any]]], Awaitable[None]]
BATCH_SIGNATURE = "(ctx: he.Context, msgs: list[he.Message[T]]) -> None"
MAX_SIZE = 10_000
MAX_WAIT = 300.0


@dataclass(frozen=True, slots=True)
class Batch:
    """How a batch handler's batches are cut: at most ``max_size`` messages, handed over at
    most ``max_wait`` seconds after the first one was ready (sooner when full)."""

    max_size: int = 100
    max_wait: float = 0.1

    def __post_init__(self) -> None:
        check_number("Batch max_size", self.max_size, integer=True, minimum=1, maximum=MAX_SIZE)
        check_number("Batch max_wait (seconds)", self.max_wait, above=True, maximum=MAX_WAIT)

    def window(self, batches: int) -> int:
        """Deliveries to hold unsettled so ``batches`` batches run while the next fill."""
        return (batches + 1) * self.max_size


class BatchFailed(Exception):  # noqa: N818 - named for what the handler says, like StopIteration
    """Raised by a batch handler to fail some messages of its batch and ack the rest.

    ``failures`` maps a message's index in the batch (``int``) or its id (``str``, every
    message of that id) to the exception it failed with; each failed message goes through
    retries and dead letters on its own, exactly as if a single-message handler had raised
    that exception (a :class:`~hexa_event.errors.PermanentError` is dead-lettered at once).
    """

    def __init__(self, failures: Mapping[int | str, BaseException]) -> None:
        if not isinstance(failures, Mapping) or not all(
            isinstance(k, int | str) and not isinstance(k, bool) and isinstance(e, BaseException)
            for k, e in failures.items()
        ):
            raise ConfigurationError(
                "BatchFailed takes a mapping of message index (int) or message id (str) to "
                f"the exception it failed with, e.g. {{0: ValueError('bad')}}; got {failures!r}"
            )
        self.failures = dict(failures)
        super().__init__(f"{len(self.failures)} message(s) of the batch failed")


def _second_parameter(handler: object) -> object:
    """The annotation of the handler's second parameter (a string if unresolvable)."""
    try:
        sig = inspect.signature(handler, eval_str=True, follow_wrapped=False)  # type: ignore[arg-type]
    except Exception:
        try:
            sig = inspect.signature(handler, follow_wrapped=False)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return inspect.Parameter.empty
    params = list(sig.parameters.values())
    return params[1].annotation if len(params) >= 2 else inspect.Parameter.empty


def _shape(annotation: object) -> str:
    """``"batch"``, ``"single"`` or ``""`` (cannot tell) for a message parameter's annotation."""
    if isinstance(annotation, str):
        text = annotation.replace(" ", "")
        for prefix in ("list[", "List[", "Sequence[", "typing.Sequence[", "abc.Sequence["):
            if text.startswith(prefix):
                return "batch"
        return "single" if text.split("[")[0].endswith("Message") else ""
    origin = typing.get_origin(annotation) or annotation
    if origin in (list, Sequence, tuple) or (
        isinstance(origin, type)
        and issubclass(origin, Sequence | list)
        and origin not in (str, bytes)
    ):
        return "batch"
    if isinstance(origin, type) and issubclass(origin, Message):
        return "single"
    return ""


def check_batch_handler(handler: object, *, where: str) -> None:
    """Refuse a handler that cannot take ``(ctx, msgs)`` or is annotated for one message."""
    check_handler(handler, where=where, signature=BATCH_SIGNATURE)
    if _shape(_second_parameter(handler)) == "single":
        raise ConfigurationError(
            f"{where}: with batch= the handler is called as handler{BATCH_SIGNATURE} (a list "
            "of messages), but its second parameter is annotated as one he.Message: annotate "
            "it list[he.Message[T]], or drop batch= to handle one message at a time"
        )


def refuse_batch_signature(handler: object, *, where: str) -> None:
    """Refuse a handler annotated for a list of messages on a single-message subscription."""
    if _shape(_second_parameter(handler)) == "batch":
        raise ConfigurationError(
            f"{where}: the handler's second parameter is annotated as a list of messages, but "
            "without batch= it is called with one he.Message: add batch=he.Batch(max_size=..., "
            "max_wait=...) to receive lists, or annotate it he.Message[T]"
        )


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """A batch subscription: how to cut batches and the (async) handler they go to."""

    batch: Batch
    handler: BatchHandler

    def single(self, action: str) -> Handler:
        """The handler as a one-message handler: what an in-place retry runs."""
        handler = self.handler
        ctx = Context(handler_action=action)

        async def one(_ctx: Context, msg: Message[Any]) -> None:
            try:
                await handler(ctx, [msg])
            except BatchFailed as exc:
                if exc.failures:
                    raise next(iter(exc.failures.values())) from None

        return one


def plan(batch: object, handler: object, *, where: str) -> BatchPlan:
    """Check ``batch`` and ``handler`` for ``subscribe(batch=...)``; the plan to run them."""
    if not isinstance(batch, Batch):
        raise ConfigurationError(
            f"{where}: batch= takes he.Batch(max_size=..., max_wait=...), got {batch!r}"
        )
    check_batch_handler(handler, where=where)
    run = as_async(handler)  # type: ignore[arg-type]
    return BatchPlan(batch, run)  # type: ignore[arg-type]


class Ready:
    """The deliveries of one batch that go to the handler, side by side with what was read
    from them (no object per delivery)."""

    __slots__ = ("contexts", "deliveries", "messages", "opened")

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.opened: list[wire.Opened] = []
        self.messages: list[Message[Any]] = []
        self.contexts: dict[int, Context] = {}
        """Each message's context by index, where one was built while opening (another
        propagator than the default, whose extract may have side effects); the others are
        built only when a message fails."""


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class BatchDispatcher(Dispatcher):
    """The single-event pipeline, cut in two: :meth:`prepare` each delivery, then
    :meth:`run` the prepared ones through the batch handler and settle each.

    The handler gets one shared context, so no per-message context is built on the way in
    (only checked, so a malformed context header still makes the record poison); a
    message's own context is built when it fails (for the failure's log and retries)."""

    def __init__(
        self,
        publish: PublishCall,
        features: Features,
        route: Route,
        closing: asyncio.Event,
        plan: BatchPlan,
    ) -> None:
        super().__init__(publish, features, route, closing)
        self._handler = plan.handler
        self._ctx = Context(handler_action=route.chain.action)
        self._chain = route.chain
        propagator = route.propagator
        self._check: Callable[[Mapping[str, bytes]], None] | None = (
            propagator.check if type(propagator) is DefaultPropagator else None
        )

    def begin(self) -> Ready:
        """A new batch to :meth:`prepare` deliveries into."""
        self._fast_json = json_decoder(self._route.payload_type)  # the registry may change
        return Ready()

    def prepare(self, delivery: Delivery, ready: Ready) -> Poison | float | None:
        """Open ``delivery`` into ``ready`` (None); or a poison record to dead-letter; or
        the epoch time a retry copy is due at; None also once it is settled (nacked: not
        due while shutting down)."""
        try:  # what _open does, inline: this runs for every message
            opened = wire.open_delivery(delivery, self._chain)
        except Exception as exc:
            return Poison(None, exc)
        if opened.due:
            due = self._when_due(delivery, opened)
            if not isinstance(due, wire.Opened):
                return due
        try:
            message = self._message(delivery, opened)
            headers = delivery.record.headers
            if self._check is not None:
                self._check(headers)
            else:
                ready.contexts[len(ready.messages)] = self._context_of(headers, opened)
        except Exception as exc:
            return Poison(opened, exc)
        ready.deliveries.append(delivery)
        ready.opened.append(opened)
        ready.messages.append(message)
        return None

    def _context_of(self, headers: Mapping[str, bytes], opened: wire.Opened) -> Context:
        return self._context(
            headers, opened.event_id, self._route.chain.action, opened.root_id, opened.root_action
        )

    async def poison(self, delivery: Delivery, poison: Poison) -> None:
        """Dead-letter a record that cannot reach the handler (settles it)."""
        await self._dead_letter(delivery, poison.opened, POISON, poison.error)

    async def run(self, ready: Ready) -> None:
        """Run the handler on the ready messages and settle every delivery (ack, retry or
        dead letter).

        Only the cancellation of the calling task escapes; unsettled deliveries are nacked
        then."""
        deliveries = ready.deliveries
        try:
            try:
                await self._handler(self._ctx, ready.messages)
            except BaseException as exc:
                if isinstance(exc, asyncio.CancelledError) and _being_cancelled():
                    raise
                failures = self._failures(exc, ready.messages)
            else:
                for delivery in deliveries:
                    delivery.ack()
                self.counters.handled += len(deliveries)
                return
            for n, delivery in enumerate(deliveries):
                error = failures.get(n)
                if error is None:
                    self.counters.handled += 1
                    delivery.ack()
                    continue
                opened, message = ready.opened[n], ready.messages[n]
                ctx = ready.contexts.get(n)
                if ctx is None:
                    ctx = self._context_of(delivery.record.headers, opened)
                await self._failed(delivery, opened, ctx, message, error)
        except BaseException:
            for delivery in deliveries:
                if delivery.outcome is None:
                    delivery.nack()
            raise

    def _failures(
        self, exc: BaseException, messages: list[Message[Any]]
    ) -> dict[int, BaseException]:
        """Which messages failed with what: those BatchFailed names, or all of them."""
        if not isinstance(exc, BatchFailed):
            return dict.fromkeys(range(len(messages)), exc)
        failures: dict[int, BaseException] = {}
        for key, error in exc.failures.items():
            if isinstance(key, int):
                found = [key] if 0 <= key < len(messages) else []
            else:
                found = [n for n, message in enumerate(messages) if message.id == key]
            if not found:
                wrong = ConfigurationError(
                    f"BatchFailed names {key!r}, which is no index (0 to {len(messages) - 1}) or "
                    f"message id of the batch: the whole batch failed; name messages by "
                    "their index in msgs or by msg.id"
                )
                logger.error("batch handler of %s: %s", self._route.action, wrong)
                return dict.fromkeys(range(len(messages)), wrong)
            for n in found:
                failures[n] = error
        return failures


class Books(Protocol):
    """The receiver's bookkeeping of one subscription, as batches update it."""

    action: str
    unsettled: dict[Delivery, float]
    waiting: dict[Delivery, float]
    pending: list[Delivery]
    settle_wake: asyncio.Event
    room: asyncio.Event


class BatchLanes:
    """Cuts the deliveries of one subscription into batches and runs them.

    Takes the place of :class:`~hexa_event.lanes.Lanes` for a batch subscription (same
    surface: submit, items, join, stop, wake_parked, workers_alive). Deliveries wait in
    per-key queues; a batch takes the queued deliveries of free keys in arrival order and
    makes those keys busy until it ends.
    """

    def __init__(
        self,
        dispatcher: BatchDispatcher,
        batch: Batch,
        books: Books,
        closing: asyncio.Event,
        *,
        workers: int,
        name: str,
    ) -> None:
        self._dispatcher = dispatcher
        self._max_size = batch.max_size
        self._max_wait = batch.max_wait
        self._books = books
        self._closing = closing
        self._workers = workers
        self._name = name
        self._queues: dict[Hashable, deque[Delivery]] = {}
        self._busy: set[Hashable] = set()
        self._parked: dict[Hashable, asyncio.TimerHandle] = {}
        self._free = 0
        """Queued deliveries of keys neither busy nor parked: what the next batch can take."""
        self._first_free = 0.0
        self._running: dict[asyncio.Task[None], list[Delivery]] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.count = 0
        """Deliveries submitted and not finished."""
        self._collector = asyncio.create_task(self._collect(), name=f"{name}-batches")

    # -- the Lanes surface ----------------------------------------------------------------------

    def submit(self, lane: Hashable, item: Delivery) -> None:
        self.count += 1
        if self.count == 1:
            self._idle.clear()  # set only once the count is back to 0
        queue = self._queues.get(lane)
        if queue is None:
            queue = self._queues[lane] = deque()
        queue.append(item)
        if lane not in self._busy and lane not in self._parked:
            free = self._free  # _add_free(1), inline: this runs for every delivery
            if free and free + 1 < self._max_size:
                self._free = free + 1
            else:
                self._add_free(1)

    def items(self) -> Iterator[Delivery]:
        """Deliveries submitted and not finished (queued, parked and in running batches)."""
        for queue in list(self._queues.values()):
            yield from list(queue)
        for deliveries in list(self._running.values()):
            yield from list(deliveries)

    async def join(self, within: float | None) -> bool:
        return await wait_set(self._idle, within)

    async def stop(self, grace: float = 5.0, *, message: str | None = None) -> bool:
        for handle in self._parked.values():
            handle.cancel()
        self._parked.clear()
        tasks = [self._collector, *self._running]
        for task in tasks:
            task.cancel(message)
        _, pending = await asyncio.wait(tasks, timeout=grace)
        return not pending

    def wake_parked(self) -> None:
        for lane, handle in list(self._parked.items()):
            handle.cancel()
            self._unpark(lane)
        self._wake.set()  # closing: cut the batch being collected now

    @property
    def workers_alive(self) -> bool:
        return not self._collector.done()

    # -- collecting -----------------------------------------------------------------------------

    def _add_free(self, n: int) -> None:
        if n <= 0:
            return
        if self._free == 0:
            self._first_free = time.monotonic()
        self._free += n
        if self._free == n or self._free >= self._max_size:
            self._wake.set()

    async def _wait(self, seconds: float | None) -> None:
        self._wake.clear()
        if seconds is None:
            await self._wake.wait()
            return
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def _collect(self) -> None:
        while True:
            if len(self._running) >= self._workers or self._free == 0:
                await self._wait(None)
                continue
            if self._free < self._max_size and not self._closing.is_set():
                remaining = self._first_free + self._max_wait - time.monotonic()
                if remaining > 0:
                    await self._wait(remaining)
                    continue
            keys, deliveries = self._take()
            if not deliveries:  # cannot happen while the count of free deliveries is right
                logger.error("batches of %s: no free delivery to take; recounting", self._name)
                self._free = 0
                continue
            task = asyncio.create_task(self._run(keys, deliveries), name=f"{self._name}-batch")
            self._running[task] = deliveries

    def _take(self) -> tuple[list[Hashable], list[Delivery]]:
        """The next batch: queued deliveries of free keys, in order, up to max_size."""
        room = self._max_size
        keys: list[Hashable] = []
        taken: list[Delivery] = []
        emptied: list[Hashable] = []
        for key, queue in self._queues.items():
            if key in self._busy or key in self._parked:
                continue
            self._free -= len(queue)
            keys.append(key)
            if len(queue) <= room:
                taken.extend(queue)
                room -= len(queue)
                emptied.append(key)
            else:
                while room:
                    taken.append(queue.popleft())
                    room -= 1
            if not room:
                break
        for key in emptied:
            del self._queues[key]
        self._busy.update(keys)
        return keys, taken

    # -- running --------------------------------------------------------------------------------

    async def _run(self, keys: list[Hashable], deliveries: list[Delivery]) -> None:
        books = self._books
        held: dict[Hashable, list[Delivery]] = {}
        back: set[Delivery] = set()
        dispatcher = self._dispatcher
        prepare = dispatcher.prepare
        ready = dispatcher.begin()
        waiting = books.waiting
        try:
            for delivery in deliveries:
                if held:  # a retry copy ahead of it waits: so does the rest of its key
                    record = delivery.record
                    kept = held.get((record.channel, record.key))
                    if kept is not None:
                        kept.append(delivery)
                        back.add(delivery)
                        continue
                if waiting and waiting.pop(delivery, None) is not None:
                    books.unsettled[delivery] = time.monotonic()  # stall clock starts when due
                    books.room.set()
                if delivery.outcome is not None:
                    continue
                prepared = prepare(delivery, ready)
                if prepared is None:  # ready, or settled already
                    continue
                if isinstance(prepared, Poison):
                    await dispatcher.poison(delivery, prepared)
                else:
                    key = (delivery.record.channel, delivery.record.key)
                    held[key] = [delivery]
                    back.add(delivery)
                    self._hold(key, delivery, prepared)
            if ready.deliveries:
                await dispatcher.run(ready)
            unsettled_left = False  # run, poison and prepare settled all but those held back
        except BaseException:
            unsettled_left = True
            raise
        finally:
            finished = [d for d in deliveries if d not in back] if back else deliveries
            if unsettled_left:  # cancelled, or a dead letter that could not even be built
                for delivery in finished:
                    if delivery.outcome is None:
                        delivery.nack()
            for lane, kept in held.items():
                self._queues.setdefault(lane, deque()).extendleft(reversed(kept))
            self._settled(finished)
            self._running.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
            for lane in keys:
                self._busy.discard(lane)
                queue = self._queues.get(lane)
                if queue and lane not in self._parked:
                    self._add_free(len(queue))
            self._wake.set()
            if not self.count:
                self._idle.set()

    def _hold(self, key: Hashable, delivery: Delivery, due: float) -> None:
        """Park ``key`` until ``due``; its first delivery waits outside the window."""
        books = self._books
        if books.unsettled.pop(delivery, None) is not None:
            books.waiting[delivery] = due
            books.room.set()
        loop = asyncio.get_running_loop()
        self._parked[key] = loop.call_later(max(0.0, due - time.time()), self._unpark, key)

    def _unpark(self, key: Hashable) -> None:
        if self._parked.pop(key, None) is not None and key not in self._busy:
            queue = self._queues.get(key)
            if queue:
                self._add_free(len(queue))

    def _settled(self, deliveries: list[Delivery]) -> None:
        if not deliveries:
            return
        self.count -= len(deliveries)
        self._books.pending.extend(deliveries)
        self._books.settle_wake.set()
