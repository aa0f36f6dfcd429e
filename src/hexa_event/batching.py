"""Batch handlers: ``subscribe(..., batch=Batch(max_size, max_wait))``.

A batch handler is called as ``handler(ctx, msgs)`` with up to ``max_size`` messages, at most
``max_wait`` seconds after the first of them was ready. The guarantees, on every driver:

- one key's events are in order within a batch, and a key is never in two running batches
  at once (so per-key order holds across batches); different keys share batches;
- the handler returns: every message is acked;
- the list is the handler's own (sorting or emptying it changes nothing but what an index
  in :class:`BatchFailed` names);
- it raises :class:`BatchFailed` naming some messages: those fail one by one (retry copies,
  then dead letters, exactly as single events; a retry copy comes back to this handler in a
  later batch; an in-place retry re-runs each alone, one after the other), the others are
  acked; an exception group (a task group's) holding only BatchFailed counts as they do
  (with anything else beside, every message fails: those named with their own exception);
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
import functools
import inspect
import logging
import time
import typing
from collections import deque
from collections.abc import (
    Awaitable,
    Callable,
    Collection,
    Hashable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, Protocol

from . import envelope as env
from . import wire
from .codecs import get_codec, json_decoder
from .context import Context
from .dispatch import POISON, SEALED_HEADERS, Dispatcher, Poison, Route
from .driver import Delivery, Features, Outcome, PairHeaders, RecordBatch, Subscription
from .errors import ConfigurationError
from .event import Message
from .lanes import wait_set
from .middleware import Handler, Overruns, as_async, check_handler
from .numbers import check_number
from .propagation import GUEST_WIRE, DefaultPropagator
from .publishing import PublishCall

logger = logging.getLogger(__name__)

BatchHandler = Callable[[Context, list[Message[Any]]], Awaitable[None]]
BATCH_SIGNATURE = "(ctx: he.Context, msgs: list[he.Message[T]]) -> None"
MAX_SIZE = 10_000
MAX_WAIT = 300.0

_NO_TIME = object()
"""Equal to no header value (``prepare_records``' last emit time before the first)."""


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

    ``failures`` maps a message's index in the handler's list as it left it (``int``) or its
    id (``str``, every message of that id) to the exception it failed with; each failed
    message goes through retries and dead letters on its own, exactly as if a single-message
    handler had raised that exception (a :class:`~hexa_event.errors.PermanentError` is
    dead-lettered at once).
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

        async def one(_ctx: Context, msg: Message[Any]) -> None:
            try:
                await handler(Context(handler_action=action), [msg])
            except BatchFailed as exc:
                if exc.failures:
                    raise next(iter(exc.failures.values())) from None
            except BaseExceptionGroup as group:  # a task group's: as BatchFailed if only those
                held, rest = group.split(BatchFailed)
                if held is None or rest is not None:
                    raise
                for leaf in _leaves(held):
                    if isinstance(leaf, BatchFailed) and leaf.failures:
                        raise next(iter(leaf.failures.values())) from None

        return one


def plan(
    batch: object, handler: object, *, where: str, overruns: Overruns | None = None
) -> BatchPlan:
    """Check ``batch`` and ``handler`` for ``subscribe(batch=...)``; the plan to run them
    (a sync handler cancelled while its thread runs on is listed in ``overruns``)."""
    if not isinstance(batch, Batch):
        raise ConfigurationError(
            f"{where}: batch= takes he.Batch(max_size=..., max_wait=...), got {batch!r}"
        )
    check_batch_handler(handler, where=where)
    run = as_async(handler, overruns)  # type: ignore[arg-type]
    return BatchPlan(batch, run)  # type: ignore[arg-type]


class Ready:
    """The messages of one batch that go to the handler, side by side with where each came
    from and what was read from it (no object per message but the message)."""

    __slots__ = ("contexts", "deliveries", "indexes", "messages", "opened", "sources", "taken")

    def __init__(self) -> None:
        self.messages: list[Message[Any]] = []
        self.sources: list[Delivery | RecordBatch] = []
        """Each message's delivery, or the record batch it is a record of."""
        self.indexes: list[int] = []
        """Each message's index in its record batch; -1 for a delivery."""
        self.opened: list[wire.Opened | None] = []
        """What was read from each delivery; None for a record opened the common way (read
        again from its delivery when it fails)."""
        self.deliveries: list[Delivery] = []
        """The sources that are deliveries (acked one by one)."""
        self.contexts: dict[int, Context] = {}
        """Each message's context by index, where one was built while opening (another
        propagator than the default, whose extract may have side effects); the others are
        built only when a message fails."""
        self.taken: list[Delivery] = []
        """Records taken out of their batch because they failed (settled by :meth:`run`)."""


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class BatchDispatcher(Dispatcher):
    """The single-event pipeline, cut in two: :meth:`prepare` each delivery, then
    :meth:`run` the prepared ones through the batch handler and settle each.

    The handler gets a context of the batch, so no per-message context is built on the way in
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
        self._action = route.chain.action
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
        ready.sources.append(delivery)
        ready.indexes.append(-1)
        ready.opened.append(opened)
        ready.messages.append(message)
        return None

    @property
    def opens_records(self) -> bool:
        """Whether :meth:`prepare_records` can open records the common way (the default
        propagator, event ids): otherwise record batches are not worth it."""
        return self._check is not None and self._chain.dedup_ids == "event"

    def prepare_records(
        self, batch: RecordBatch, ready: Ready, blocked: set[tuple[str, str]]
    ) -> list[int]:
        """Open the records of ``batch`` into ``ready`` the common way (a first delivery of
        an event of ours, from a source channel, due now, JSON); the indexes of the others,
        in order, to take out and :meth:`prepare` as deliveries. A record whose (channel,
        key) is in ``blocked`` is one of those, and so is every later record of the key of
        one of those (its order is kept: added to ``blocked``)."""
        chain = self._chain
        check = self._check
        assert check is not None  # opens_records
        fast = self._fast_json
        if fast is None:  # another JSON codec registered, or a type msgspec does not take
            json, target = get_codec("json"), self._route.payload_type
            fast = functools.partial(json.decode, target=target)
        if check is None or chain.dedup_ids != "event":
            for index in range(len(batch)):
                blocked.add((batch.channels[index], batch.keys[index]))
            return list(range(len(batch)))
        times, emit_time = self._times, self._emit_time
        last_time: object = _NO_TIME  # the last HEXA_EVENT_TIME value found in times
        last_timestamp = None
        channels, keys, pairs_of = batch.channels, batch.keys, batch.headers
        bodies, natives = batch.bodies, batch.natives
        retry = {c for c in set(channels) if chain.retry_number_of(c)}  # copies: careful path
        name0, name1, name2, name3, name4, name5, name6, name7 = SEALED_HEADERS
        guest = GUEST_WIRE
        read_headers = self._read_headers
        messages: list[Message[Any]] = []
        add = messages.append
        odd: list[int] = []
        for index, pairs in enumerate(pairs_of):
            channel = channels[index]
            if (retry or blocked) and (channel in retry or (channel, keys[index]) in blocked):
                odd.append(index)  # a copy, or behind one of its key: the careful path
                blocked.add((channel, keys[index]))
                continue
            try:
                # The handler's, a dict only if read.
                headers: Mapping[str, bytes] = PairHeaders(pairs)
                ours = False
                if len(pairs) == 8:  # (the pairs of a record of ours, read by position)
                    (
                        (n0, correlation),
                        (n1, locale),
                        (n2, user),
                        (n3, event_id),
                        (n4, raw_time),
                        (n5, _),
                        (n6, reply),
                        (n7, codec),
                    ) = pairs
                    # One test per name: the interpreter's own string compare (a tuple of
                    # them compares each the generic way, at twice the cost for the new
                    # name strings the client makes for every record).
                    if (
                        n0 == name0
                        and n1 == name1
                        and n2 == name2
                        and n3 == name3
                        and n4 == name4
                        and n5 == name5
                        and n6 == name6
                        and n7 == name7
                    ):
                        ours = True
                if ours and event_id and raw_time is not None:
                    # Exactly what our emitters write (the common case): the values read by
                    # position, and the default propagator's check inline for the usual
                    # context values (ASCII text is UTF-8: checked without decoding it; a
                    # user other than the guest is checked in full; a null value is b"",
                    # as false).
                    source = channel
                    if correlation and not correlation.isascii():
                        correlation.decode()
                    if locale and not locale.isascii():
                        locale.decode()
                    if user and user != guest:
                        check(headers)
                else:
                    event_id, raw_time, codec, reply, source = read_headers(headers, channel)
                if codec and codec != b"json":
                    raise LookupError  # another codec: the careful path
                payload = fast(bodies[index])
                if raw_time == last_time:  # a burst shares its emit millisecond
                    timestamp = last_timestamp
                else:
                    timestamp = times.get(raw_time)  # type: ignore[arg-type]  # (None: not kept)
                    if timestamp is None:  # (the broker's time, or a value not seen yet)
                        timestamp = emit_time(raw_time, functools.partial(batch.timestamp, index))
                    else:
                        last_time, last_timestamp = raw_time, timestamp
                add(  # positional, in Message's field order (cheaper than keywords)
                    Message(
                        event_id.decode(),
                        source,
                        keys[index],
                        payload,
                        headers,
                        1,
                        timestamp,
                        reply.decode() if reply else "",
                        "json",
                        channel,
                        natives[index],
                    )
                )
            except Exception:  # odd or poison: the careful path says which
                odd.append(index)
                blocked.add((channel, keys[index]))
        if messages:
            count = len(messages)
            ready.messages += messages
            ready.sources += [batch] * count
            ready.opened += [None] * count
            if odd:
                skipped = set(odd)
                ready.indexes += [i for i in range(len(pairs_of)) if i not in skipped]
            else:
                ready.indexes += range(count)
        return odd

    def _read_headers(
        self, headers: Mapping[str, bytes], channel: str
    ) -> tuple[bytes, bytes | None, bytes | None, bytes | None, str]:
        """``prepare_records``' reading of a record with other headers than our emitters'
        usual eight: its event id, time, codec and reply channel header values and its
        source channel, the context checked in full (raises for poison context headers);
        LookupError for a retry copy, a scheduled event or one without an event id (the
        careful path: its id is its coordinates)."""
        if env.ATTEMPT in headers or env.DELIVER_AT in headers:
            raise LookupError
        get = headers.get
        event_id = get(env.EVENT_ID)
        if not event_id:
            raise LookupError
        raw = get(env.SOURCE_CHANNEL)
        source = raw.decode() if raw else channel
        self._check(headers)  # type: ignore[misc]  # (opens_records)
        return (
            event_id,
            get(env.EVENT_TIME),
            get(env.PAYLOAD_ENCODER),
            get(env.REPLY_CHANNEL),
            source,
        )

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
        given = ready.messages.copy()  # the handler's own: sorting or emptying it is fine
        try:
            try:
                await self._handler(Context(handler_action=self._action), given)
            except BaseException as exc:
                if isinstance(exc, asyncio.CancelledError) and _being_cancelled():
                    raise
                failures = self._failures(exc, ready.messages, given)
            else:
                if self._closing.is_set() and any(d.outcome is not None for d in deliveries):
                    logger.warning(  # left behind at close, which gave its deliveries back
                        "batch handler of %s left behind at close has ended; its events "
                        "were given back and are delivered again",
                        self._route.action,
                    )
                    return
                for delivery in deliveries:
                    delivery.ack()
                self.counters.handled += len(ready.messages)
                if self.given_back:
                    for message in ready.messages:
                        self.went_through(message.id)
                return
            # What was handled is settled before the failures are sent on, so a failure that
            # takes long (a retry copy that cannot be published) cut at close gives back only
            # itself. Failed records are taken out of their batches first.
            failed: dict[int, Delivery] = {}
            for n in sorted(failures):
                source = ready.sources[n]
                failed[n] = (
                    source.take(ready.indexes[n]) if isinstance(source, RecordBatch) else source
                )
            ready.taken.extend(d for n, d in failed.items() if ready.indexes[n] >= 0)
            for n, source in enumerate(ready.sources):
                if n not in failed and source.outcome is None:
                    source.ack()  # a record batch: every record left in it was handled
            self.counters.handled += len(ready.sources) - len(failed)
            for n, delivery in failed.items():
                error = failures[n]
                opened = ready.opened[n]
                if opened is None:  # a record: read again from its delivery
                    try:
                        opened = wire.open_delivery(delivery, self._chain)
                    except Exception as exc:  # a header its first reading skips: poison
                        await self._dead_letter(delivery, None, POISON, exc)
                        continue
                message = ready.messages[n]
                ctx = ready.contexts.get(n)
                if ctx is None:
                    ctx = self._context_of(delivery.record.headers, opened)
                await self._failed(delivery, opened, ctx, message, error)
        except BaseException:
            for delivery in (*deliveries, *ready.taken):
                if delivery.outcome is None:
                    delivery.nack()
            raise

    def _failures(
        self, exc: BaseException, messages: list[Message[Any]], given: list[Message[Any]]
    ) -> dict[int, BaseException]:
        """Which of ``messages`` failed with what: those BatchFailed names (an index names
        a message in ``given``, the handler's list as it left it), or all of them.

        An exception group (a task group's) holding :class:`BatchFailed` fails the messages
        they name; anything else it holds fails every other message (as a group of those)."""
        if isinstance(exc, BaseExceptionGroup):
            held, rest = exc.split(BatchFailed)
            if held is not None:
                failures: dict[int, BaseException] = {}
                for leaf in _leaves(held):
                    for index, error in self._failures(leaf, messages, given).items():
                        failures.setdefault(index, error)  # (named twice: the first one)
                if rest is not None:
                    for index in range(len(messages)):
                        failures.setdefault(index, rest)
                return failures
        if not isinstance(exc, BatchFailed):
            return dict.fromkeys(range(len(messages)), exc)
        named = getattr(exc, "failures", None)
        if not isinstance(named, Mapping) or not all(
            isinstance(error, BaseException) for error in named.values()
        ):
            return self._all_failed(
                messages,
                f"{type(exc).__name__} carries no mapping of message index or id to exception "
                f"(a subclass that does not call BatchFailed.__init__?), got {named!r}",
            )
        failures = {}
        positions: dict[int, int] | None = None
        for key, error in named.items():
            if isinstance(key, int):
                if positions is None:
                    positions = {id(message): n for n, message in enumerate(messages)}
                n = positions.get(id(given[key])) if 0 <= key < len(given) else None
                found = [] if n is None else [n]
            else:
                found = [n for n, message in enumerate(messages) if message.id == key]
            if not found:
                return self._all_failed(
                    messages,
                    f"BatchFailed names {key!r}, which is no index (0 to {len(given) - 1}) or "
                    "message id of the batch",
                )
            for n in found:
                failures[n] = error
        return failures

    def _all_failed(self, messages: list[Message[Any]], why: str) -> dict[int, BaseException]:
        """Every message failed: the handler's BatchFailed cannot be used (logged)."""
        wrong = ConfigurationError(
            f"{why}: the whole batch failed; name messages by their index in msgs or by msg.id"
        )
        logger.error("batch handler of %s: %s", self._route.action, wrong)
        return dict.fromkeys(range(len(messages)), wrong)


def _leaves(group: BaseExceptionGroup[Any]) -> Iterator[BaseException]:
    """The exceptions of ``group`` and of the groups it holds, in order."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


def fetches_records(subscription: Subscription | None) -> bool:
    """Whether ``subscription`` hands out record batches (overrides ``fetch_records`` and
    ``settle_records``; a wrapper that does not keeps ``fetch``)."""
    if subscription is None:
        return False
    kind = type(subscription)
    return (
        kind.fetch_records is not Subscription.fetch_records
        and kind.settle_records is not Subscription.settle_records
    )


class Books(Protocol):
    """The receiver's bookkeeping of one subscription, as batches update it."""

    action: str
    unsettled: dict[Delivery, float]
    waiting: dict[Delivery, float]
    pending: list[Delivery]
    pending_records: list[RecordBatch]
    records: dict[RecordBatch, float]
    settle_wake: asyncio.Event
    room: asyncio.Event


class BatchLanes:
    """Cuts the deliveries of one subscription into batches and runs them.

    Takes the place of :class:`~hexa_event.lanes.Lanes` for a batch subscription (same
    surface: submit, items, join, stop, wake_parked, workers_alive). Deliveries wait in
    per-key queues; a batch takes the queued deliveries of free keys in arrival order and
    makes those keys busy until it ends (a key it takes only part of goes behind the others).

    Record batches (:meth:`submit_records`, from a driver's ``fetch_records``; only with
    one batch running at a time, so no key can be in two) wait whole, in fetch order, and
    go to the handler without a delivery per record: a batch takes them after the free
    deliveries, and acks each whole when the handler returns. A record that needs the
    careful path (a retry copy, poison, a failure) is taken out as a delivery; so is every
    later record of its key while that key has deliveries queued, parked or held, so one
    key's order holds across both.
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
        records: bool = False,
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
        self.records = records
        """Fed record batches (:meth:`submit_records`) rather than deliveries."""
        self._records: deque[RecordBatch] = deque()
        self._queued_records = 0
        self._running_records: dict[asyncio.Task[None], list[RecordBatch]] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.count = 0
        """Deliveries submitted and not finished."""
        self._given_back: set[Hashable] = set()
        """Keys with an event given back at close: their later events are given back unrun
        (never handled ahead of it)."""
        dispatcher.resumed = self._resumed
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

    def submit_records(self, batch: RecordBatch) -> None:
        """A batch of records fetched together (see the class docstring)."""
        count = len(batch)
        self.count += count
        if self.count == count:
            self._idle.clear()
        self._records.append(batch)
        self._queued_records += count
        self._add_free(count)

    def fetch_room(self) -> int:
        """Records to fetch next so that the queued record batches fill whole batches."""
        return self._max_size - self._queued_records % self._max_size

    def items(self) -> Iterator[Delivery]:
        """Deliveries submitted and not finished (queued, parked and in running batches)."""
        for queue in list(self._queues.values()):
            yield from list(queue)
        for deliveries in list(self._running.values()):
            yield from list(deliveries)

    async def join(self, within: float | None) -> bool:
        return await wait_set(self._idle, within)

    async def stop(
        self, grace: float = 5.0, *, message: str | None = None
    ) -> list[asyncio.Task[None]]:
        for handle in self._parked.values():
            handle.cancel()
        self._parked.clear()
        tasks = [self._collector, *self._running]
        for task in tasks:
            task.cancel(message)
        _, pending = await asyncio.wait(tasks, timeout=grace)
        # Record batches not handled (queued, or in a batch left behind): given back.
        given_back = [*self._records, *(b for r in self._running_records.values() for b in r)]
        self._records.clear()
        self._running_records.clear()
        for batch in given_back:
            if batch.outcome is None:
                batch.nack()
                self._books.pending_records.append(batch)
        if given_back:
            self._books.settle_wake.set()
        return list(pending)

    def wake_parked(self) -> None:
        for lane, handle in list(self._parked.items()):
            handle.cancel()
            self._unpark(lane)
        self._wake.set()  # closing: cut the batch being collected now

    @property
    def workers_alive(self) -> bool:
        return not self._collector.done()

    @property
    def parked(self) -> Collection[Hashable]:
        """The keys whose deliveries wait, not stalled: parked until a due time, or in a
        batch waiting out an in-place retry's back-off (so is every message of it)."""
        backing_off = self._dispatcher.backing_off
        if not backing_off:
            return self._parked.keys()
        resting = set(self._parked)
        for deliveries in self._running.values():
            if not backing_off.isdisjoint(deliveries):
                resting.update(_lane(d) for d in deliveries)
        return resting

    @property
    def resting_records(self) -> Collection[RecordBatch]:
        """The record batches that wait, not stalled: those of a running batch waiting out
        an in-place retry's back-off (record batches run one batch at a time, so a back-off
        is that batch's)."""
        if not self._dispatcher.backing_off or not self._running_records:
            return ()
        return {batch for batches in self._running_records.values() for batch in batches}

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
            keys, deliveries, batches = self._take()
            if not deliveries and not batches:  # cannot happen while the count is right
                logger.error("batches of %s: no free delivery to take; recounting", self._name)
                self._free = self._queued_records
                continue
            task = asyncio.create_task(
                self._run(keys, deliveries, batches), name=f"{self._name}-batch"
            )
            self._running[task] = deliveries
            if batches:
                self._running_records[task] = batches

    def _take(self) -> tuple[list[Hashable], list[Delivery], list[RecordBatch]]:
        """The next batch: queued deliveries of free keys, in order, then whole record
        batches, up to max_size."""
        room = self._max_size
        keys: list[Hashable] = []
        taken: list[Delivery] = []
        emptied: list[Hashable] = []
        partly: Hashable | None = None
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
                partly = key
            if not room:
                break
        for key in emptied:
            del self._queues[key]
        if partly is not None:  # the rest of a busy key goes behind the other keys' queues,
            self._queues[partly] = self._queues.pop(partly)  # which it never starves
        self._busy.update(keys)
        batches: list[RecordBatch] = []
        records = self._records
        while records and (len(records[0]) <= room or not (taken or batches)):
            batch = records.popleft()
            count = len(batch)
            room -= count
            self._free -= count
            self._queued_records -= count
            batches.append(batch)
        return keys, taken, batches

    # -- running --------------------------------------------------------------------------------

    async def _run(
        self, keys: list[Hashable], deliveries: list[Delivery], batches: list[RecordBatch]
    ) -> None:
        books = self._books
        held: dict[Hashable, list[Delivery]] = {}
        back: set[Delivery] = set()
        dispatcher = self._dispatcher
        prepare = dispatcher.prepare
        ready = dispatcher.begin()
        waiting = books.waiting
        taken: list[Delivery] = []
        """Records taken out of ``batches`` and settled in this run."""
        diverted = 0
        """Records taken out of ``batches`` and queued or held for a later batch."""
        given_back = self._given_back
        due: set[Hashable] = set()
        """Keys whose event held until due fell due in this run: the clocks behind it start."""
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
                    due.add(_lane(delivery))  # so do those of its key behind it
                    self._restart(self._queues.get(_lane(delivery), ()))
                elif due and _lane(delivery) in due:
                    self._restart((delivery,))
                if delivery.outcome is not None:
                    continue
                if given_back and _lane(delivery) in given_back:
                    delivery.nack()  # its key's earlier event was given back at close
                    continue
                prepared = prepare(delivery, ready)
                if prepared is None:  # ready, or settled already
                    if delivery.outcome is Outcome.NACK:  # not due, given back at close
                        self._gave_back(delivery)
                    continue
                if isinstance(prepared, Poison):
                    await dispatcher.poison(delivery, prepared)
                else:
                    key = (delivery.record.channel, delivery.record.key)
                    held[key] = [delivery]
                    back.add(delivery)
                    self._hold(key, delivery, prepared)
            for batch in batches:
                diverted += await self._open_records(batch, ready, held, taken)
            if ready.sources:
                await dispatcher.run(ready)
            unsettled_left = False  # run, poison and prepare settled all but those held back
        except BaseException:
            unsettled_left = True
            raise
        finally:
            finished = [d for d in deliveries if d not in back] if back else deliveries
            taken.extend(ready.taken)
            if unsettled_left:  # cancelled, or a dead letter that could not even be built
                for delivery in (*finished, *taken):
                    if delivery.outcome is None:
                        delivery.nack()
            if self._closing.is_set():
                for delivery in (*finished, *taken):
                    if delivery.outcome is Outcome.NACK:
                        self._gave_back(delivery)
            for lane, kept in held.items():
                self._queues.setdefault(lane, deque()).extendleft(reversed(kept))
                if lane not in self._parked and lane not in self._busy:
                    self._add_free(len(kept))  # fell due (unparked) while this batch ran
            self._settled(finished)
            task: Any = asyncio.current_task()
            if batches and self._running_records.pop(task, None) is not None:
                for batch in batches:
                    if batch.outcome is None:
                        batch.nack() if unsettled_left else batch.ack()
                self.count -= sum(map(len, batches)) - diverted
                books.pending.extend(taken)
                books.pending_records.extend(batches)
                books.settle_wake.set()
            self._running.pop(task, None)
            for lane in keys:
                self._busy.discard(lane)
                queue = self._queues.get(lane)
                if queue and lane not in self._parked:
                    self._add_free(len(queue))
            self._wake.set()
            if not self.count:
                self._idle.set()

    async def _open_records(
        self,
        batch: RecordBatch,
        ready: Ready,
        held: dict[Hashable, list[Delivery]],
        taken: list[Delivery],
    ) -> int:
        """Open the records of ``batch`` into ``ready``; those that need the careful path
        are taken out as deliveries and prepared, poisoned, queued or held as in
        :meth:`_run` (appended to ``taken`` when settled in this run). Returns how many
        were queued or held for a later batch."""
        queues, parked, busy = self._queues, self._parked, self._busy
        blocked: set[tuple[str, str]] = set()
        if held or queues or parked or self._given_back:
            blocked.update(held, queues, parked, self._given_back)  # type: ignore[arg-type]
        odd = self._dispatcher.prepare_records(batch, ready, blocked)
        if not odd:
            return 0
        books = self._books
        now = time.monotonic()
        diverted = 0
        for index in odd:
            delivery = batch.take(index)
            books.unsettled[delivery] = now
            record = delivery.record
            key = (record.channel, record.key)
            kept = held.get(key)
            if kept is not None:  # behind a retry copy of this run not due yet
                kept.append(delivery)
                diverted += 1
                continue
            queue = queues.get(key)
            if queue is not None or key in parked:  # behind deliveries of a later batch
                if queue is None:
                    queue = queues[key] = deque()
                queue.append(delivery)
                diverted += 1
                if key not in busy and key not in parked:
                    self._add_free(1)
                continue
            if key in self._given_back:
                delivery.nack()  # its key's earlier event was given back at close
                taken.append(delivery)
                continue
            prepared = self._dispatcher.prepare(delivery, ready)
            if prepared is None:  # ready, or settled already
                taken.append(delivery)
                if delivery.outcome is Outcome.NACK:  # not due, given back at close
                    self._gave_back(delivery)
            elif isinstance(prepared, Poison):
                taken.append(delivery)
                await self._dispatcher.poison(delivery, prepared)
            else:
                held[key] = [delivery]
                diverted += 1
                self._hold(key, delivery, prepared)
        return diverted

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

    def _gave_back(self, delivery: Delivery) -> None:
        """``delivery`` was given back: at close, so are the later events of its key."""
        if self._closing.is_set():
            self._given_back.add(_lane(delivery))

    def _restart(self, deliveries: Iterable[Delivery]) -> None:
        """Their stall clocks start now: they waited behind a delivery of their key held
        until due, or backing off for an in-place retry, which does not stall them."""
        unsettled = self._books.unsettled
        now = time.monotonic()
        for delivery in deliveries:
            if unsettled.pop(delivery, None) is not None:
                unsettled[delivery] = now

    def _resumed(self, delivery: Delivery) -> None:
        """An in-place retry's back-off ended: the clocks of its batch, and of the
        deliveries queued behind the keys of that batch, start again."""
        batch = next((ds for ds in self._running.values() if delivery in ds), [delivery])
        self._restart((delivery, *batch))
        for lane in {_lane(d) for d in (delivery, *batch)}:
            self._restart(self._queues.get(lane, ()))
        fetched = self._books.records
        now = time.monotonic()
        for batches in self._running_records.values():  # (one batch at a time: this one)
            for records in batches:
                if fetched.pop(records, None) is not None:
                    fetched[records] = now

    def _settled(self, deliveries: list[Delivery]) -> None:
        if not deliveries:
            return
        self.count -= len(deliveries)
        self._books.pending.extend(deliveries)
        self._books.settle_wake.set()


def _lane(delivery: Delivery) -> tuple[str, str]:
    """A delivery's key: one key of one channel (as the receiver's lanes)."""
    record = delivery.record
    return record.channel, record.key
