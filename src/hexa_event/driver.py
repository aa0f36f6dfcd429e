"""The driver contract: the only thing a broker integration implements.

A driver moves raw records; it knows nothing of codecs, contexts, retries or dedup keys,
which the core does once for every driver. This module is the bottom layer: it imports
nothing of ours but the leaves :mod:`hexa_event.errors` and :mod:`hexa_event.numbers`.
The whole contract:

- :meth:`Driver.publish` takes a batch of :class:`RawRecord` and returns only when the broker
  (or database) has durably accepted every record of the batch; it raises
  :class:`~hexa_event.errors.DriverError` otherwise, and then any subset may have been stored.
  A record's ``not_before`` is honoured by the broker when ``features.delayed_publish``.
- :meth:`Driver.subscribe` opens a :class:`Subscription` for one consumer group: every group
  receives every record of its channels; the subscriptions of one group share the records,
  and a record with a given key is handed to one subscription at a time, in publish order.
- :meth:`Subscription.fetch` returns the next deliveries. Each is settled exactly once by
  :meth:`Delivery.ack` (done: never delivered to this group again, barring a crash before the
  settlement was written) or :meth:`Delivery.nack` (give it back: delivered again, to this
  group, no earlier than its delay). ``ack``/``nack`` only record the outcome on the
  delivery (no driver code runs); the core then hands settled deliveries to
  :meth:`Subscription.settle` in batches, the one door through which a driver learns of
  settlements: it applies them (frees prefetch room, finishes offsets, schedules nacked
  records again) and makes them durable (commits ranges). A settlement that could not be
  written is handed over again. A delivery never settled before its subscription closes is
  delivered again later.
- :meth:`Subscription.close` stops fetching and releases the group membership; settlements
  written before it are kept. Closing twice is harmless. A subscription whose driver was
  closed under it returns ``[]`` from ``fetch`` (the core treats that as the end).
- :meth:`Subscription.lag` (optional) says how far behind the group is, per channel; the
  default answers "unknown" (None). The receiver samples it in the background.
- :meth:`Subscription.fetch_records` and :meth:`Subscription.settle_records` (optional,
  both or neither): the same records as ``fetch``, handed out as one :class:`RecordBatch`
  (parallel lists, no object per record) and settled as a whole. The core's batch handlers
  use them when a subscription overrides them; any other driver keeps ``fetch``/``settle``.

A driver declares what it can do in :class:`Features`; the core reads ``delayed_publish``,
``delayed_nack`` and ``patterns``, the outbox relay ``persistent``, and the conformance suite
(:mod:`hexa_event.testing`) every flag to decide which guarantees to check.
"""

from __future__ import annotations

import abc
import enum
import math
from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, Sequence, ValuesView
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard, final

import msgspec

from .errors import (
    AlreadySettledError,
    DriverError,
    InvalidEventError,
    NotStoredError,
    PartialPublishError,
)
from .numbers import check_number

StartPosition = Literal["earliest", "latest"]


class RawRecord(msgspec.Struct, frozen=True, gc=False):
    """A record as the broker carries it: channel, key, headers and an opaque body.

    Not tracked by the garbage collector (one fewer object per event for it to scan): a
    record holds text, bytes and a mapping of them, which cannot lead back to it.

    ``not_before`` (seconds since the epoch, 0 for "at once") asks the broker to hold the
    record back until then; drivers without ``features.delayed_publish`` deliver it at once
    and the core waits instead.
    """

    channel: str
    key: str
    headers: Mapping[str, bytes]
    body: bytes
    not_before: float = 0.0


class SealedRecords(list[RawRecord]):
    """Records the core's sealer built, each one passing :func:`check_records` by
    construction (the sealer checked what it did not build itself: each channel object once,
    the key's and body's types, every header), as a list. ``driver`` is set by an emitter
    that hands the list straight to that driver's ``publish`` (no publish middleware in
    between, nobody else holding the list), or by a wrapping driver that hands it on
    unchanged (:func:`hand_on`): :func:`check_records` then returns at once, for that driver
    only. A list nobody vouched for this way (``driver`` None, another driver, a plain list,
    records a publish middleware saw) gets every check.

    ``text`` is True when every header value is UTF-8 (the sealer encoded it from text, or
    checked the bytes it was given): a driver writing headers as text may then hand the
    values over without decoding each, for the list :func:`vouched` for it."""

    __slots__ = ("driver", "text")

    def __init__(self, records: Iterable[RawRecord] = (), *, text: bool = False) -> None:
        super().__init__(records)
        self.driver: object = None
        self.text = text


def vouched(records: Sequence[RawRecord], driver: object) -> TypeGuard[SealedRecords]:
    """Whether ``records`` are a :class:`SealedRecords` handed straight to ``driver``."""
    return type(records) is SealedRecords and records.driver is driver


def check_records(records: Sequence[RawRecord], driver: object = None) -> None:
    """Refuse records a broker must not store: drivers call this at the top of ``publish``
    (``driver``: the driver publishing, see :class:`SealedRecords`).

    Raises :class:`~hexa_event.errors.InvalidEventError` naming the field: the channel must
    be non-empty text without NUL, the key text, header names text and values bytes, the body
    bytes, ``not_before`` a finite number >= 0.
    """
    if driver is not None and vouched(records, driver):
        return  # checked as it was sealed
    for record in records:
        # The common case by exact types (cheap); anything else is looked at closely. The
        # headers in one pass over their items, by a plain loop: on CPython 3.11 it costs
        # half of two ``frozenset.issuperset(map(type, ...))`` (each built a set).
        if (
            record.__class__ is RawRecord
            and record.channel.__class__ is str
            and record.channel
            and "\x00" not in record.channel
            and record.key.__class__ is str
            and record.body.__class__ is bytes
            and record.not_before.__class__ is float
            and 0.0 <= record.not_before < _INF
        ):
            for name, value in record.headers.items():
                if name.__class__ is not str or value.__class__ is not bytes:
                    _check_record(record)
                    break
            continue
        _check_record(record)


_INF = float("inf")


def hand_on(records: Sequence[RawRecord], wrapper: object, driver: object) -> None:
    """For a driver that wraps ``driver`` and hands ``records`` to its ``publish`` as they
    are: records vouched for ``wrapper`` (:class:`SealedRecords`) are vouched for ``driver``."""
    if type(records) is SealedRecords and records.driver is wrapper:
        records.driver = driver


def refuse(count: int, problems: Mapping[int, NotStoredError]) -> DriverError:
    """The error for a publish of ``count`` records of which ``problems`` (index -> why)
    were refused before anything was sent: the refusal itself for one record, otherwise a
    :class:`~hexa_event.errors.PartialPublishError` where every other record is known not
    sent (retriable)."""
    if count == 1 and 0 in problems:
        return problems[0]
    first = min(problems)
    failed: dict[int, DriverError] = {
        i: problems.get(i)
        or NotStoredError(f"not sent: record {first} of its batch was refused", retriable=True)
        for i in range(count)
    }
    return PartialPublishError(frozenset(), failed)


def publish_outcome(count: int, failed: Mapping[int, DriverError]) -> DriverError:
    """The error for a publish of ``count`` records that were sent, of which ``failed``
    (index -> error) were not acknowledged; the others are stored."""
    if count == 1 and 0 in failed:
        return failed[0]
    stored = frozenset(i for i in range(count) if i not in failed)
    return PartialPublishError(stored, dict(failed))


def _check_record(record: object) -> None:
    if not isinstance(record, RawRecord):
        raise InvalidEventError("record", f"must be a RawRecord, got {type(record).__name__}")
    channel = record.channel
    if not isinstance(channel, str) or not channel or "\x00" in channel:
        raise InvalidEventError("channel", f"must be non-empty text without NUL: {channel!r}")
    if not isinstance(record.key, str):
        raise InvalidEventError("key", f"must be text, got {type(record.key).__name__}")
    if not isinstance(record.body, bytes):
        raise InvalidEventError("body", f"must be bytes, got {type(record.body).__name__}")
    headers = record.headers
    if not _BYTES_VALUES.issuperset(map(type, headers.values())) or not _TEXT_NAMES.issuperset(
        map(type, headers)
    ):
        _explain_headers(headers)
    nb = record.not_before
    if isinstance(nb, bool) or not isinstance(nb, int | float) or not math.isfinite(nb) or nb < 0:
        raise InvalidEventError("not_before", f"must be a finite number >= 0, got {nb!r}")


_BYTES_VALUES = frozenset((bytes,))
_TEXT_NAMES = frozenset((str,))


def _explain_headers(headers: Mapping[str, object]) -> None:
    for name, value in headers.items():
        if not isinstance(name, str) or not name:
            raise InvalidEventError("headers", f"has a bad header name {name!r}")
        if not isinstance(value, bytes):
            raise InvalidEventError(
                "headers",
                f"value of {name!r} is {type(value).__name__}, not bytes: encode header "
                "values (value.encode()) before publishing",
            )


@dataclass(frozen=True, slots=True)
class Features:
    """What a driver guarantees; the core and the conformance suite read these."""

    name: str
    persistent: bool
    """Records survive the driver's process (and a broker restart). The outbox relay refuses
    targets that are not persistent."""
    consumer_groups: bool = True
    """Each group receives every record; members of one group share them."""
    ordered_per_key: bool = True
    """Records of one key reach one group in publish order."""
    patterns: bool = True
    """``subscribe`` accepts a channel pattern (a regular expression)."""
    delayed_publish: bool = False
    """The broker holds a record back until its ``not_before`` (SQL, Pulsar deliver-at)."""
    scheduled_publish: bool = False
    """The broker holds a scheduled event (``Event.deliver_at``/``delay``) until due without
    holding back other keys (Pulsar deliver-at, JetStream scheduled messages): the emitter
    sets ``not_before`` for it. Elsewhere the core waits: with ``delayed_nack`` it gives the
    record back until due (durably on SQL), without it holds the record (Kafka, STAN)."""
    delayed_nack: bool = False
    """``nack(delay)`` hands the record back to the broker, which redelivers it after the
    delay: the core nacks a retry copy that came early instead of waiting while holding it."""
    exclusive_subscriptions: bool = False
    """The broker can refuse a second exclusive consumer (raises SubscriptionBusyError)."""
    new_group_reads_history: bool = True
    """A new group starting at ``earliest`` sees records published before it existed."""


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    """What the core asks a driver to subscribe to."""

    group: str
    """Consumer group: the handler's action (or the name the options override it with)."""
    channels: tuple[str, ...] = ()
    pattern: str | None = None
    """A regular expression matched against whole channel names, in addition to
    ``channels`` (the subscription covers both)."""
    start: StartPosition = "earliest"
    """Where a group with no stored position begins."""
    prefetch: int = 256
    """Upper bound on deliveries handed out and not yet settled."""
    options: Any = None
    """The driver's own typed subscription options (the Go library's ``Extra``), or None."""
    retry_channels: tuple[str, ...] = ()
    """The subset of ``channels`` that are this group's retry channels. A driver that puts
    them in a group of their own (so that members share the source channels evenly) may."""
    ephemeral: bool = False
    """A throwaway group of one member (``hexa-event tail``): when it closes, the driver
    removes what the broker keeps for the group (positions, a durable subscription or
    consumer), so nothing is retained for a reader that will never come back."""


class Outcome(enum.Enum):
    """How a delivery was settled."""

    ACK = "ack"
    NACK = "nack"


@dataclass(frozen=True, slots=True)
class SubscriptionStatus:
    """What a subscription reports for health checks."""

    assignment: tuple[str, ...] = ()
    """What this member holds now (``orders-0``, ``orders-3``...; empty when not known)."""
    error: str = ""
    """A current problem (broker unreachable, fetch failing), empty when none."""
    lag: int | None = None
    """Records of the group's channels not yet settled by the group, when the driver has
    that figure at hand (no query). The receiver reports :meth:`Subscription.lag` instead;
    its default falls back to this."""
    joined: bool = True
    """False while this member is still joining its group (Kafka: no assignment received
    yet, not even an empty one); readiness probes wait for it."""


ALL_CHANNELS = "*"
"""The key of a :meth:`Subscription.lag` answer that counts every channel of the
subscription together (a broker that cannot tell them apart, such as one JetStream
consumer over several subjects)."""


class Delivery:
    """One record handed to one group member; settle it once with ack or nack.

    ``ack`` and ``nack`` are final: they record the outcome (and a nack's delay) and raise
    :class:`~hexa_event.errors.AlreadySettledError` on a second call, the same on every
    driver. They run no driver code: the driver learns of the outcome when the delivery is
    handed to :meth:`Subscription.settle`. Drivers subclass this to keep their own position
    data.
    """

    __slots__ = ("coordinates", "delay", "delivery_count", "outcome", "record", "timestamp")

    def __init__(
        self,
        record: RawRecord,
        *,
        coordinates: str,
        delivery_count: int = 1,
        timestamp: float | None = None,
    ) -> None:
        self.record = record
        self.coordinates = coordinates
        """Where the broker keeps it, e.g. ``orders-2-1532``: the id of last resort."""
        self.delivery_count = delivery_count
        """1 on first delivery to this group; higher on broker redelivery, when known."""
        self.timestamp = timestamp
        """Broker time of the record, seconds since the epoch, when known."""
        self.outcome: Outcome | None = None
        """None until settled."""
        self.delay = 0.0
        """For a nack: seconds before the group may receive the record again."""

    @property
    def native(self) -> object:
        """The broker client's own message object (an escape hatch)."""
        return None

    @final
    def ack(self) -> None:
        """Mark handled: once the settlement is written, the group never receives it again."""
        if self.outcome is not None:
            raise AlreadySettledError(self.coordinates, self.outcome.value)
        self.outcome = Outcome.ACK

    @final
    def nack(self, delay: float = 0.0) -> None:
        """Give the record back: the group receives it again no earlier than ``delay`` s."""
        if self.outcome is not None:
            raise AlreadySettledError(self.coordinates, self.outcome.value)
        check_number("nack delay", delay)
        self.outcome = Outcome.NACK
        self.delay = float(delay)


HeaderPairs = Sequence[tuple[str, bytes | None]]
"""A record's headers as its broker client lists them: ``(name, value)`` pairs in the
record's order. Read as a mapping (:class:`PairHeaders`), of repeated names the last wins
and a null value (None) is ``b""``, present and empty."""


def header_dict(pairs: HeaderPairs) -> dict[str, bytes]:
    """``pairs`` as a dict: of repeated names the last wins, a null value is ``b""``."""
    raw = dict(pairs)
    for value in raw.values():  # (``None in values()``: a costlier full compare per value)
        if value is None:
            return {name: (b"" if value is None else value) for name, value in raw.items()}
    return raw  # type: ignore[return-value]  # (no null value: checked)


class ReadOnlyHeaders:
    """Not encodable: what an encoder meets in a :class:`PairHeaders` (a read-only view of a
    record's headers; encode ``dict(headers)`` instead)."""

    __slots__ = ()


READ_ONLY = ReadOnlyHeaders()


class _MappingStructMeta(msgspec.StructMeta, abc.ABCMeta):
    """A :class:`msgspec.Struct` that is also a :class:`~collections.abc.Mapping`
    (``StructMeta`` may be subclassed from msgspec 0.20)."""


class PairHeaders(
    msgspec.Struct,
    Mapping[str, bytes],
    metaclass=_MappingStructMeta,
    gc=False,
    eq=False,  # (its own __eq__ below: equal to a mapping of the same headers)
):
    """A record's headers read-only, over its :data:`HeaderPairs`: the dict (of repeated
    names the last wins, a null value is ``b""``) is built when first read, so a handler
    that never reads ``msg.headers`` pays for no dict. Compares equal to a dict of the same
    headers; ``copy()`` and ``|`` give dicts, as a ``MappingProxyType`` does.

    The pairs are the client's (confluent-kafka keeps the list it hands out on its
    message): they are read, never changed. The core reads a record of ours from
    :attr:`pairs` by position, without the dict. A struct made in C and not tracked by the
    garbage collector (one per delivery on Kafka): its pairs and dict hold text and bytes,
    which cannot lead back to it."""

    pairs: HeaderPairs
    """The client's pairs as given: read them, never change them."""
    _dict: dict[str, bytes] | None = None
    _encoded: ReadOnlyHeaders = READ_ONLY
    """Makes an encoder refuse the view, naming a type to turn into a dict, where it would
    write the struct's fields (``dict(msg.headers)`` is what to put in a payload)."""

    def mapping(self) -> dict[str, bytes]:
        """The dict every read goes to, built on the first call: read it, never change it
        (:meth:`copy` gives one to change)."""
        headers = self._dict
        if headers is None:
            headers = self._dict = header_dict(self.pairs)
        return headers

    def __getitem__(self, name: str) -> bytes:
        return self.mapping()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.mapping())

    def __len__(self) -> int:
        return len(self.mapping())

    def __contains__(self, name: object) -> bool:
        return name in self.mapping()

    def __reversed__(self) -> Iterator[str]:
        return reversed(self.mapping())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PairHeaders):
            other = other.mapping()
        return self.mapping() == other

    __hash__ = None  # type: ignore[assignment]  # (a mapping: unhashable, like a dict)

    def get(self, name: str, default: Any = None) -> Any:
        return self.mapping().get(name, default)

    def keys(self) -> KeysView[str]:
        return self.mapping().keys()

    def values(self) -> ValuesView[bytes]:
        return self.mapping().values()

    def items(self) -> ItemsView[str, bytes]:
        return self.mapping().items()

    def copy(self) -> dict[str, bytes]:
        """The headers as a new dict."""
        return self.mapping().copy()

    def __or__(self, other: Mapping[str, bytes]) -> dict[str, bytes]:
        return {**self.mapping(), **other}

    def __ror__(self, other: Mapping[str, bytes]) -> dict[str, bytes]:
        return {**other, **self.mapping()}

    def __repr__(self) -> str:
        return f"PairHeaders({self.mapping()!r})"


class RecordBatch:
    """Records handed out together by :meth:`Subscription.fetch_records`: parallel lists,
    one entry per record, in the order ``fetch`` would have handed them out (so one key's
    records are in publish order), and no object per record. A record's headers are its
    client's ``(name, value)`` pairs as they come (:data:`HeaderPairs`, empty when none): the
    core reads them as :class:`PairHeaders` does (the last of repeated names, a null value
    as ``b""``), so the driver builds no mapping per record.

    A batch is settled as a whole, once: :meth:`ack` or :meth:`nack` (all its records), then
    handed to :meth:`Subscription.settle_records`. A record the core must handle on its own
    (it failed, it is a retry copy not due yet, it is poison) is first taken out with
    :meth:`take`: it becomes a :class:`Delivery` settled like any fetched one, and the
    batch's outcome no longer covers it. Drivers subclass this and implement
    :meth:`_delivery` and :meth:`timestamp`.
    """

    __slots__ = ("bodies", "channels", "headers", "keys", "natives", "outcome", "taken")

    def __init__(self) -> None:
        self.channels: list[str] = []
        self.keys: list[str] = []
        self.headers: list[HeaderPairs] = []
        """Each record's headers as its client's ``(name, value)`` pairs (see above)."""
        self.bodies: list[bytes] = []
        self.natives: list[object] = []
        """The broker client's own message objects (``Delivery.native``)."""
        self.outcome: Outcome | None = None
        self.taken: set[int] = set()
        """Indexes of the records taken out as deliveries of their own."""

    def __len__(self) -> int:
        return len(self.bodies)

    def timestamp(self, index: int) -> float | None:
        """Broker time of record ``index`` (seconds since the epoch), when known."""
        del index
        return None

    def _delivery(self, index: int) -> Delivery:
        """Record ``index`` as a delivery of its own (the driver's subclass)."""
        raise NotImplementedError

    @final
    def take(self, index: int) -> Delivery:
        """Take record ``index`` out of the batch: a delivery settled on its own."""
        if self.outcome is not None:
            raise AlreadySettledError(f"record batch of {len(self)}", self.outcome.value)
        if index in self.taken or not 0 <= index < len(self):
            raise IndexError(f"record {index} of a batch of {len(self)} cannot be taken out")
        delivery = self._delivery(index)
        self.taken.add(index)
        return delivery

    @final
    def ack(self) -> None:
        """Every record not taken out is handled (see :meth:`Delivery.ack`)."""
        if self.outcome is not None:
            raise AlreadySettledError(f"record batch of {len(self)}", self.outcome.value)
        self.outcome = Outcome.ACK

    @final
    def nack(self) -> None:
        """Give every record not taken out back, at once (see :meth:`Delivery.nack`)."""
        if self.outcome is not None:
            raise AlreadySettledError(f"record batch of {len(self)}", self.outcome.value)
        self.outcome = Outcome.NACK


class Subscription(abc.ABC):
    """A group member's stream of deliveries."""

    @abc.abstractmethod
    async def fetch(self, max_count: int) -> Sequence[Delivery]:
        """Wait for and return 1..max_count deliveries; return ``[]`` once closed.

        Deliveries of one key come in publish order (when ``features.ordered_per_key``); the
        core runs them one after another, so a driver may hand out many at once. Deliveries
        may be settled in any order: a driver that tracks positions must never move its
        stored position past an unsettled delivery. Cancelling the call loses nothing.
        Raises :class:`~hexa_event.errors.DriverError`; ``retriable=False`` means this member
        cannot go on (the receiver stops and reports it). Drivers implement it as
        ``return await self._buffer.fetch(max_count)`` over a
        :class:`hexa_event.drivers.kit.buffer.DeliveryBuffer` their receive path feeds.
        """

    @abc.abstractmethod
    async def settle(self, deliveries: Sequence[Delivery]) -> None:
        """Apply and write the outcomes of settled deliveries: acks become durable, nacks
        go back.

        The only door through which settlements reach a driver (``ack``/``nack`` just record
        them): called by the core in batches, with deliveries of this subscription whose
        ``outcome`` is set. The driver takes each outcome into account here (the delivery
        leaves the prefetch window, its position may move, a nacked record is scheduled
        again), then writes. Raises :class:`~hexa_event.errors.DriverError` when nothing or
        only part could be written; the core then calls again later with the same
        deliveries, so applying or writing one twice must be harmless. A driver may write
        acks shortly after returning (a commit coalesced over a few milliseconds, as
        Kafka's) if a failure is raised by the next call and ``close`` writes synchronously:
        a crash in between only redelivers.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop fetching, keep settlements written so far, leave the group. Idempotent."""

    async def fetch_records(self, max_count: int) -> RecordBatch | None:
        """Optional, with :meth:`settle_records`: what :meth:`fetch` would return (the same
        window, order and errors), as one :class:`RecordBatch` of 1..max_count records;
        None once closed. A subscription serves either ``fetch`` or this, not both."""
        raise NotImplementedError

    async def settle_records(self, batches: Sequence[RecordBatch]) -> None:
        """Apply and write the outcome of settled record batches, as :meth:`settle` does
        for deliveries (an ack finishes every record not taken out, a nack gives them back
        at once); applying a batch twice is harmless."""
        raise NotImplementedError

    def status(self) -> SubscriptionStatus:
        """Membership and current problems, for health checks (cheap, never raises)."""
        return SubscriptionStatus()

    def caught_up(self) -> bool | None:
        """Whether this member has read everything its channels hold now, so that a fetch
        would only wait for new records: True or False when the driver can tell, None
        (the default) when it cannot. Read-only tools (``hexa-event dlq list``) stop at
        True instead of waiting out their idle time. Cheap, never raises."""
        return None

    async def lag(self) -> Mapping[str, int] | None:
        """How far behind the group is: per channel, the records not yet settled by it.

        Optional. The answer is the *group's* lag (every member of the group gives the same
        figure, so aggregate members with a maximum, not a sum), keyed by channel name,
        including the retry channels the group reads; a record is counted from the moment
        it is stored until the group's ack of it is written, so records fetched and not yet
        settled count. A broker that only counts the whole subscription answers one entry
        under :data:`ALL_CHANNELS`. ``None`` means unknown (the default, unless
        :meth:`status` carries a ``lag``). The receiver calls this every few seconds from a
        background task (never from ``health()``), so a query to the broker is fine; it must
        not block the event loop (run blocking client calls in a thread). Raises
        :class:`~hexa_event.errors.DriverError` when the broker cannot answer.
        """
        lag = self.status().lag
        return None if lag is None else {ALL_CHANNELS: lag}


class Driver(abc.ABC):
    """A broker integration: publish records, subscribe groups; close it last.

    Emitters and receivers are built on top of it (:func:`hexa_event.connect` returns a
    :class:`~hexa_event.Connection` that makes them).
    """

    features: Features

    @abc.abstractmethod
    async def publish(self, records: Sequence[RawRecord]) -> None:
        """Store every record; return only once the broker has durably accepted all."""

    @abc.abstractmethod
    async def subscribe(self, spec: SubscriptionSpec) -> Subscription:
        """Join ``spec.group`` on the given channels or pattern and return the member.

        Raises :class:`~hexa_event.errors.SubscriptionBusyError` when the broker refuses
        (for example a second exclusive consumer).
        """

    async def provision(self, channels: Sequence[str]) -> None:
        """Make sure the channels exist (topics, streams); a no-op where none is needed."""
        del channels

    async def discard(self, channels: Sequence[str]) -> None:
        """Delete channels only this process used (an emitter's reply channel) with what
        they hold; called after their subscription closed. A no-op where keeping a channel
        costs nothing (the default). Raises DriverError when the engine refused."""
        del channels

    async def check(self, within: float = 10.0) -> str:
        """Connect the way publish and subscribe do, creating nothing, and raise what they
        would raise on this URL and options (:class:`~hexa_event.errors.ConfigurationError`,
        :class:`~hexa_event.errors.DriverError`); a line saying what was seen otherwise.
        ``hexa-event doctor`` runs it; ``within`` bounds each network step."""
        del within
        return f"{self.features.name}: nothing to connect to"

    async def diagnose(
        self, channels: Sequence[str], groups: Sequence[str], within: float = 10.0
    ) -> list[Finding]:
        """What ``hexa-event doctor`` reports, read-only: :meth:`check` and then what the
        engine can tell of the given channels and consumer groups (topics, subscriptions,
        tables...) as :class:`Finding` s. Raises what :meth:`check` raises. The default
        reports the check alone; a driver adds its engine's own findings."""
        del channels, groups
        return [Finding("driver", "ok", await self.check(within))]

    @abc.abstractmethod
    async def close(self) -> None:
        """Release every connection. Idempotent. Subscriptions still open end: their
        ``fetch`` returns ``[]``."""

    async def __aenter__(self) -> Driver:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of :meth:`Driver.diagnose`: what was looked at, how it stands, the fix."""

    name: str
    status: Literal["ok", "warn", "fail"]
    """``warn``: works, but look."""
    detail: str
    fix: str = ""
    kind: str = ""
    """For failures: ``unreachable``, ``auth`` or ``config``."""
