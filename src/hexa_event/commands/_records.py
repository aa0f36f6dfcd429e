"""Reading records for display: scan a channel without settling, decode bodies and contexts."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import importlib
import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..codecs import get_codec
from ..context import Context
from ..driver import Delivery, Driver, StartPosition, Subscription, SubscriptionSpec
from ..envelope import EVENT_ID, EVENT_TIME, PAYLOAD_ENCODER
from ..errors import HexaEventError
from ..numbers import epoch_seconds
from ..propagation import default_propagator
from ._common import USAGE, CommandError, text_of

if TYPE_CHECKING:
    from ..connect import Connection

_END_CHECK = 0.05
"""How often a scan asks the subscription whether it has read to the end (seconds)."""
_UNTIL_CAUGHT_UP = 30.0
"""How long a scan waits for a subscription that says it has not read to the end yet
(more than the SQL driver's default ``lease_ttl``, after which a departed member's
partitions are free)."""


def load_type(spec: str | None) -> Any:
    """``package.module:Class`` (or ``package.module.Class``) -> the class; None for None."""
    if not spec:
        return None
    module_name, sep, attr = spec.partition(":")
    if not sep:
        module_name, _, attr = spec.rpartition(".")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise CommandError(
            f"cannot import the payload type {spec!r} ({exc}); give --type module:Class "
            "importable from this Python (check PYTHONPATH)",
            USAGE,
        ) from None
    return obj


def decode_body(codec: str, body: bytes, payload_type: Any = None) -> tuple[Any, str]:
    """(a JSON-able value, how it was decoded): json as data, protobuf as protojson when
    the type is known, text or base64 otherwise. Never raises."""
    if payload_type is not None and codec in ("protobuf", "protobuf-binary"):
        try:
            from google.protobuf import json_format

            message = get_codec(codec).decode(body, payload_type)
            return json_format.MessageToDict(message), "protojson"
        except Exception as exc:
            name = getattr(payload_type, "__name__", repr(payload_type))
            return _fallback(body), f"undecodable as {name}: {exc}"
    if codec in ("json", "protobuf"):
        try:  # as data only what prints as JSON again: no NaN, no infinity
            return json.loads(body, parse_constant=_no_constant, parse_float=_finite), "json"
        except (ValueError, RecursionError):  # not JSON, or nested past the recursion limit
            pass
    if codec != "protobuf-binary" and _is_text(body):
        return body.decode("utf-8"), "text"
    return base64.b64encode(body).decode(), "base64"


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is beyond a float")
    return value


def _is_text(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _fallback(body: bytes) -> str:
    return body.decode("utf-8") if _is_text(body) else base64.b64encode(body).decode()


def context_of(headers: Any) -> dict[str, Any]:
    """The context a consumer would see (only what is set)."""
    try:
        ctx = default_propagator().extract(headers, Context(correlation_id=""))
    except Exception as exc:  # a display never raises: say what is wrong instead
        text = str(exc) if isinstance(exc, HexaEventError) else f"{type(exc).__name__}: {exc}"
        return {"error": text}
    out: dict[str, Any] = {"correlation_id": ctx.correlation_id}
    if ctx.locale:
        out["locale"] = ctx.locale
    if ctx.user is not None:
        out["user"] = {"id": ctx.user.id, "type": ctx.user.type.value}
    if ctx.traceparent:
        out["traceparent"] = ctx.traceparent
    if ctx.baggage:
        out["baggage"] = dict(ctx.baggage)
    return out


def event_time(headers: Any, fallback: float | None) -> str:
    seconds = epoch_seconds(text_of(headers, EVENT_TIME))
    if seconds is None:
        seconds = fallback
    if seconds is None:
        return ""
    try:  # the broker's time is the producer's on Kafka: any int64 of milliseconds
        return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):
        return ""


def describe(delivery: Delivery, payload_type: Any = None) -> dict[str, Any]:
    """A record as the commands print it."""
    record = delivery.record
    headers = record.headers
    codec = text_of(headers, PAYLOAD_ENCODER) or "json"
    body, decoded_as = decode_body(codec, record.body, payload_type)
    return {
        "id": text_of(headers, EVENT_ID) or delivery.coordinates,
        "channel": record.channel,
        "key": record.key,
        "time": event_time(headers, delivery.timestamp),
        "coordinates": delivery.coordinates,
        "codec": codec,
        "context": context_of(headers),
        "body": body,
        "decoded_as": decoded_as,
    }


def creates_channels(conn: Connection) -> bool:
    """Whether ``conn``'s driver creates channels on first use (``provision``: Kafka and
    Pulsar topics, JetStream streams)."""
    return getattr(getattr(conn.driver, "options", None), "provision", False) is True


async def connect_reading(url: str) -> Connection:
    """The connection of a command that only reads a channel (``tail``, ``dlq``): where the
    driver creates channels on first use (:func:`creates_channels`) it creates none, so a
    mistyped channel is reported (ChannelNotFoundError) rather than made. Opens nothing
    yet."""
    from ..connect import connect

    conn = connect(url)
    if not creates_channels(conn):
        return conn
    await conn.close()  # opened nothing: connect() connects on first use
    # The URL's options but provision (an options object is taken as it is: no keyword
    # overriding the URL, which the kit would warn of).
    options = dataclasses.replace(conn.driver.options, provision=False)  # type: ignore[attr-defined]
    return connect(url, options=options)


async def open_subscription(
    driver: Driver,
    group: str,
    channels: Sequence[str],
    start: StartPosition,
    prefetch: int = 1000,
    *,
    ephemeral: bool = False,
) -> Subscription:
    return await driver.subscribe(
        SubscriptionSpec(
            group=group,
            channels=tuple(channels),
            start=start,
            prefetch=prefetch,
            ephemeral=ephemeral,
        )
    )


async def scan(subscription: Subscription, *, limit: int | None, idle: float) -> list[Delivery]:
    """Fetch until ``limit`` deliveries, ``idle`` quiet seconds or, when the driver can
    tell (:meth:`Subscription.caught_up`, the SQL log), the end of what is there now;
    settle none of them."""
    got: list[Delivery] = []
    seen: set[str] = set()
    while limit is None or len(got) < limit:
        room = 500 if limit is None else min(500, limit - len(got))
        batch = await _fetch_or_end(subscription, room, idle)
        if not batch:
            break
        for delivery in batch:
            if delivery.coordinates not in seen:
                seen.add(delivery.coordinates)
                got.append(delivery)
    return got


async def _fetch_or_end(subscription: Subscription, room: int, idle: float) -> Sequence[Delivery]:
    """One fetch; ``[]`` as soon as the subscription says it has read everything there is,
    or after ``idle`` quiet seconds. A subscription that says it has *not* (a read still
    under way on a slow database, partitions a departed member still leases) gets up to
    :data:`_UNTIL_CAUGHT_UP` seconds: a slow read is not an empty channel."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    task = asyncio.ensure_future(subscription.fetch(room))
    try:
        while True:
            if task.done():  # what it read, even if it also read to the end
                return task.result()
            caught_up = subscription.caught_up()
            if caught_up:
                return []
            bound = idle if caught_up is None else max(idle, _UNTIL_CAUGHT_UP)
            remaining = start + bound - loop.time()
            if remaining <= 0:
                return []
            await asyncio.wait({task}, timeout=min(_END_CHECK, remaining))
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
