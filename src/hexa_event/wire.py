"""The wire format read and written by the core, in both directions, in one place.

:func:`open_delivery` reads what the core needs from a delivered record (its ids, attempt,
due time, codec, reply channel); :func:`retry_copy`, :func:`dead_letter` and
:func:`replayed` build the records the core publishes about it. Header names live in
:mod:`hexa_event.envelope`, which also seals new events.

Rules (the conformance suite checks them on every driver):

- Ids. ``HEXA_EVENT_ID`` is the producer's id, or the broker coordinates for foreign records.
  In Go-compatible mode (``dedup_ids="go"``) it is always the coordinates, and the root id
  and root action are taken from the headers when present, as Go hexa-event does.
  Otherwise the root action is always this action (a copy read by another action is that
  action's first attempt).
- Attempts. A record is in this action's chain when it was read from one of its retry
  channels or names it as root action; outside the chain the attempt is 1. Inside, the
  attempt is the ``HEXA_ATTEMPT`` header, but never lower than the retry channel implies
  (a copy read from ``<base>.retry.N`` is at least attempt N+1, whatever a Go service
  forwarded) and never below 1.
- Due time. A scheduled event (``HEXA_DELIVER_AT``, epoch ms) is due then. A copy in the
  chain is due at its ``HEXA_RETRY_AT`` (epoch ms), or for a copy without a fresh one (Go's,
  or a header forwarded from an older copy) at the record's broker time plus the policy's
  back-off, as Go computes. A due time is never later than the policy's longest back-off
  (for a scheduled event: 366 days) from the record's broker time (now when it has none or
  it is later): a cap from now would move with each redelivery, and a record due in the
  year 9999 would come back for ever. Malformed numbers make the record poison.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from . import envelope as env
from .driver import Delivery, RawRecord
from .errors import DecodeError
from .event import MAX_SCHEDULE
from .retry import (
    RetryPolicy,
    dead_letter_channel,
    retry_channel,
    retry_number_after,
    retry_prefix,
)

DedupIds = Literal["event", "go"]

REPLAYED_FROM = "HEXA_REPLAYED_FROM"
"""On replayed records: the coordinates of the dead letter they were copied from."""

MAX_ERROR_TEXT = 1024
_MAX_ATTEMPT = 1_000_000
_MAX_DIGITS = 18
_MAX_CACHED_CHANNELS = 1024

_COPY_ONLY_HEADERS = (
    env.ATTEMPT,
    env.RETRY_AT,
    env.DEAD_LETTER_REASON,
    env.ERROR_TYPE,
    env.ERROR_MESSAGE,
    env.SOURCE_CHANNEL,
    env.SOURCE_COORDINATES,
    env.ROOT_ACTION,
)


@dataclass(frozen=True, slots=True)
class Chain:
    """The names one subscription's retry chain uses."""

    action: str
    """The handler's action: the dedup keys' action."""
    base: str
    """The base of the retry and dead-letter channels (the action unless set apart)."""
    policy: RetryPolicy
    dedup_ids: DedupIds = "event"
    _retry_prefix: str = field(init=False, repr=False, compare=False)
    _retry_numbers: dict[str, int] = field(init=False, repr=False, compare=False)
    """:meth:`retry_number_of` per channel seen (a subscription reads a few channels)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_retry_prefix", retry_prefix(self.base))
        object.__setattr__(self, "_retry_numbers", {})

    def retry_channel(self, retry_number: int) -> str:
        return retry_channel(self.base, retry_number)

    @property
    def dead_letter_channel(self) -> str:
        return dead_letter_channel(self.base)

    def retry_number_of(self, channel: str) -> int:
        """n for ``<base>.retry.<n>`` (n >= 1), else 0."""
        number = self._retry_numbers.get(channel)
        if number is None:
            number = retry_number_after(channel, self._retry_prefix)
            if len(self._retry_numbers) < _MAX_CACHED_CHANNELS:
                self._retry_numbers[channel] = number
        return number


class Opened(msgspec.Struct, frozen=True, gc=False):
    """What the core reads from one delivery before decoding its payload (text and numbers
    only, so the garbage collector need not track it)."""

    event_id: str
    root_id: str
    root_action: str
    source_channel: str
    """The channel the event was emitted to (a copy names its source)."""
    attempt: int
    due: float
    """Epoch seconds before which the handler must not run; 0 for "at once"."""


def open_delivery(delivery: Delivery, chain: Chain) -> Opened:
    """Read ids, attempt and due time; DecodeError when a header the core needs is malformed."""
    record = delivery.record
    headers = record.headers
    channel = record.channel
    go_ids = chain.dedup_ids == "go"
    retry_number = chain._retry_numbers.get(channel)  # the cache of retry_number_of, inline
    if retry_number is None:
        retry_number = chain.retry_number_of(channel)
    if not go_ids and not retry_number and env.ATTEMPT not in headers:
        # The common case, a first delivery from a source channel: three lookups, read
        # inline; a value that is not UTF-8 bytes takes the careful path below, which names it.
        get = headers.get
        try:
            raw = get(env.EVENT_ID)
            event_id = raw.decode() if raw else delivery.coordinates
            raw = get(env.ROOT_EVENT_ID)
            root_id = raw.decode() if raw else event_id
            raw = get(env.SOURCE_CHANNEL)
            source = raw.decode() if raw else channel
        except (AttributeError, UnicodeDecodeError):
            pass
        else:
            due = _scheduled(delivery) if env.DELIVER_AT in headers else 0.0
            return Opened(event_id, root_id, chain.action, source, 1, due)
    coordinates = delivery.coordinates  # read once: some drivers make it on demand
    if go_ids:
        event_id = coordinates
        root_id = _text(headers, env.ROOT_EVENT_ID) or event_id
        root_action = _text(headers, env.ROOT_ACTION) or chain.action
    else:
        event_id = _text(headers, env.EVENT_ID) or coordinates
        root_id = _text(headers, env.ROOT_EVENT_ID) or event_id
        root_action = chain.action
    source = _text(headers, env.SOURCE_CHANNEL) or channel
    if not retry_number and (
        env.ATTEMPT not in headers or _text(headers, env.ROOT_ACTION) != chain.action
    ):
        return Opened(event_id, root_id, root_action, source, 1, _scheduled(delivery))
    attempt = max(_int(headers, env.ATTEMPT, 1), retry_number + 1, 1)
    attempt = min(attempt, _MAX_ATTEMPT)
    now = time.time()
    due = _int(headers, env.RETRY_AT, 0) / 1000
    fresh = delivery.timestamp is None or due >= delivery.timestamp
    if retry_number and (not due or not fresh) and delivery.timestamp is not None:
        due = delivery.timestamp + chain.policy.delay(retry_number)
    due = min(due, _sent(delivery, now) + chain.policy.delay_cap) if due > now else 0.0
    return Opened(event_id, root_id, root_action, source, attempt, due)


def _scheduled(delivery: Delivery) -> float:
    """A scheduled event's due time (``HEXA_DELIVER_AT``), 0 when absent or past; never
    later than the longest schedule an emitter accepts from when the record was sent."""
    due = _int(delivery.record.headers, env.DELIVER_AT, 0) / 1000
    now = time.time()
    return min(due, _sent(delivery, now) + MAX_SCHEDULE) if due > now else 0.0


def _sent(delivery: Delivery, now: float) -> float:
    """When the record was sent: its broker time, or ``now`` when it has none or a later
    one (a broker clock ahead of ours). The base of a due time's cap, which stays put
    across redeliveries."""
    sent = delivery.timestamp
    return now if sent is None or sent > now else sent


def codec_name(headers: Mapping[str, bytes]) -> str:
    """The payload encoder the producer named (``json`` when none)."""
    return _text(headers, env.PAYLOAD_ENCODER) or "json"


def reply_channel(headers: Mapping[str, bytes]) -> str:
    return _text(headers, env.REPLY_CHANNEL)


def retry_copy(
    delivery: Delivery, opened: Opened, chain: Chain, error: BaseException, due: float
) -> RawRecord:
    """The copy of a failed delivery for its next attempt, ``<base>.retry.<attempt>``."""
    headers = _copy_headers(delivery, opened, error)
    headers[env.ATTEMPT] = str(opened.attempt + 1).encode()
    headers[env.RETRY_AT] = str(int(due * 1000)).encode()
    return RawRecord(
        channel=chain.retry_channel(opened.attempt),
        key=delivery.record.key,
        headers=headers,
        body=delivery.record.body,
        not_before=due,
    )


def dead_letter(
    delivery: Delivery,
    opened: Opened | None,
    chain: Chain,
    reason: str,
    error: BaseException,
) -> RawRecord:
    """The dead letter of a delivery; ``opened`` is None for records whose headers are poison."""
    if opened is None:
        coordinates = delivery.coordinates
        opened = Opened(
            event_id=_safe_text(delivery.record.headers, env.EVENT_ID) or coordinates,
            root_id=_safe_text(delivery.record.headers, env.ROOT_EVENT_ID) or coordinates,
            root_action=chain.action,
            source_channel=_safe_text(delivery.record.headers, env.SOURCE_CHANNEL)
            or delivery.record.channel,
            attempt=1,
            due=0.0,
        )
    headers = _copy_headers(delivery, opened, error)
    headers[env.DEAD_LETTER_REASON] = reason.encode()
    headers[env.ATTEMPT] = str(opened.attempt).encode()
    return RawRecord(
        channel=chain.dead_letter_channel,
        key=delivery.record.key or opened.event_id,
        headers=headers,
        body=delivery.record.body,
    )


def replayed(letter: RawRecord, coordinates: str, to: str | None = None) -> RawRecord | None:
    """The record to publish for a dead letter, or None when it has nowhere to go."""
    target = to or _safe_text(letter.headers, env.SOURCE_CHANNEL)
    if not target:
        return None
    headers = {
        k: v for k, v in clean_headers(letter.headers).items() if k not in _COPY_ONLY_HEADERS
    }
    headers[REPLAYED_FROM] = coordinates.encode()
    return RawRecord(channel=target, key=letter.key, headers=headers, body=letter.body)


def clean_headers(headers: Mapping[str, object]) -> dict[str, bytes]:
    """Headers fit to publish: str names and bytes values (text encoded, others dropped)."""
    out: dict[str, bytes] = {}
    for name, value in headers.items():
        if not isinstance(name, str):
            continue
        if isinstance(value, bytes):
            out[name] = value
        elif isinstance(value, str):
            out[name] = value.encode("utf-8", "surrogateescape")
        elif isinstance(value, bytearray | memoryview):
            out[name] = bytes(value)
    return out


def error_text(error: BaseException) -> str:
    """``str(error)`` bounded to MAX_ERROR_TEXT characters; never raises."""
    try:
        text = str(error)
    except Exception:
        text = f"<{type(error).__name__} with an unprintable message>"
    return text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 3] + "..."


def _copy_headers(delivery: Delivery, opened: Opened, error: BaseException) -> dict[str, bytes]:
    headers = clean_headers(delivery.record.headers)
    headers.pop(env.RETRY_AT, None)
    headers.pop(env.DELIVER_AT, None)  # a copy's due time is its own
    headers[env.EVENT_ID] = opened.event_id.encode()
    headers[env.ROOT_EVENT_ID] = opened.root_id.encode()
    headers[env.ROOT_ACTION] = opened.root_action.encode()
    headers[env.SOURCE_CHANNEL] = opened.source_channel.encode()
    headers[env.SOURCE_COORDINATES] = delivery.coordinates.encode()
    headers[env.ERROR_TYPE] = type(error).__name__.encode()
    headers[env.ERROR_MESSAGE] = error_text(error).encode("utf-8", "replace")
    return headers


def _text(headers: Mapping[str, bytes], name: str) -> str:
    raw = headers.get(name)
    if raw is None:
        return ""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"header {name!r} is not UTF-8 text") from exc
    except AttributeError:
        raise DecodeError(f"header {name!r} is not bytes but {type(raw).__name__}") from None


def _safe_text(headers: Mapping[str, bytes], name: str) -> str:
    try:
        return _text(headers, name)
    except DecodeError:
        return ""


def _int(headers: Mapping[str, bytes], name: str, default: int) -> int:
    text = _text(headers, name).strip()
    if not text:
        return default
    digits = text[1:] if text[:1] in "+-" else text
    if not digits.isascii() or not digits.isdigit() or len(digits) > _MAX_DIGITS:
        raise DecodeError(
            f"header {name!r} must be a decimal integer of at most {_MAX_DIGITS} digits, "
            f"got {text[:40]!r}"
        )
    return int(text)
