"""Unit-testing handlers without a broker: call one directly, capture what it emits.

    receiver = build_receiver()                        # your code, any driver URL
    await call_handler(receiver, "billing.charge", {"order": 42})

    capture = EmitCapture()
    handler = make_handler(capture.emitter())         # inject the emitter your code uses
    await call_handler(handler, Order(42), action="billing.charge")
    assert capture.payloads("invoices") == [{"order": 42}]

:func:`call_handler` builds the :class:`~hexa_event.Message` and the
:class:`~hexa_event.Context` the receiver would (the four dedup keys filled), runs the
handler with the receiver's middlewares when given a receiver, and returns; an exception of
the handler propagates. A payload given as plain data (dict, list, str...) for a handler
subscribed with a type is converted through the JSON codec, as it would be on the wire.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from ..codecs import get_codec
from ..context import Context
from ..driver import Driver, Features, RawRecord, Subscription, SubscriptionSpec
from ..emitter import EmitMiddleware, Emitter
from ..envelope import EVENT_ID
from ..errors import ConfigurationError
from ..event import Message
from ..ids import new_event_id
from ..middleware import as_async
from ..propagation import default_propagator
from ..receiver import Receiver

__all__ = ["EmitCapture", "Emitted", "build_context", "build_message", "call_handler"]


def build_context(
    action: str = "test-action",
    *,
    event_id: str | None = None,
    root_event_id: str | None = None,
    root_action: str | None = None,
    base: Context | None = None,
) -> Context:
    """A handler's context with the four dedup keys filled (``base`` gives the rest)."""
    event_id = event_id or new_event_id()
    return (base or Context()).with_(
        event_id=event_id,
        handler_action=action,
        root_event_id=root_event_id or event_id,
        root_handler_action=root_action or action,
    )


def build_message(
    payload: Any,
    *,
    channel: str = "test-channel",
    key: str = "test-key",
    id: str | None = None,
    attempt: int = 1,
    headers: Mapping[str, bytes] | None = None,
    timestamp: datetime | None = None,
    reply_channel: str = "",
    codec: str = "json",
) -> Message[Any]:
    """A message as a handler receives it (attempt 1, now, no headers unless given)."""
    return Message(
        id=id or new_event_id(),
        channel=channel,
        key=key,
        payload=payload,
        headers=MappingProxyType(dict(headers or {})),
        attempt=attempt,
        timestamp=timestamp or datetime.now(UTC),
        reply_channel=reply_channel,
        codec=codec,
        delivered_from=channel,
    )


async def call_handler(
    target: Receiver | Callable[..., Any],
    payload: Any,
    *,
    action: str | None = None,
    ctx: Context | None = None,
    channel: str | None = None,
    key: str = "test-key",
    id: str | None = None,
    attempt: int = 1,
    headers: Mapping[str, bytes] | None = None,
) -> Message[Any]:
    """Run a handler once with a built message; return the message it was given.

    ``target`` is a receiver (``action`` names the subscription; its middlewares run, its
    payload type applies) or a handler function (sync or async; ``action`` defaults to
    ``test-action``). ``ctx`` supplies correlation id, user, locale...: the dedup keys are
    filled from the message id and the action.
    """
    payload_type: Any = None
    if isinstance(target, Receiver):
        subs = target.subscriptions
        if action is None or action not in subs:
            raise ConfigurationError(
                f"call_handler needs action= one of {sorted(subs)} for receiver "
                f"{target.name!r}, got {action!r}"
            )
        info = subs[action]
        handler = info.route.handler
        payload_type = info.route.payload_type
        channel = channel or (info.channels[0] if info.channels else "test-channel")
    else:
        handler = as_async(target)
        action = action or "test-action"
        channel = channel or "test-channel"
    if payload_type is not None and not _is_instance(payload, payload_type):
        codec = get_codec("json")
        payload = codec.decode(codec.encode(payload), payload_type)
    message = build_message(
        payload, channel=channel, key=key, id=id, attempt=attempt, headers=headers
    )
    context = build_context(action, event_id=message.id, base=ctx)
    result = handler(context, message)
    if inspect.isawaitable(result):
        await result
    return message


def _is_instance(value: Any, kind: Any) -> bool:
    try:
        return isinstance(value, kind)
    except TypeError:  # a generic alias such as dict[str, int]
        return True


@dataclass(frozen=True, slots=True)
class Emitted:
    """One record a captured emitter would have published."""

    record: RawRecord

    @property
    def channel(self) -> str:
        return self.record.channel

    @property
    def key(self) -> str:
        return self.record.key

    @property
    def id(self) -> str:
        return self.record.headers[EVENT_ID].decode()

    @property
    def headers(self) -> Mapping[str, bytes]:
        return self.record.headers

    def payload(self, payload_type: Any = None) -> Any:
        """The body decoded with the codec it was encoded with (to ``payload_type``)."""
        codec = self.record.headers.get("_payload_encoder", b"json").decode()
        return get_codec(codec).decode(self.record.body, payload_type)

    @property
    def context(self) -> Context:
        """The context a consumer would read from the headers."""
        return default_propagator().extract(self.record.headers, Context())


class _Recorder(Driver):
    features = Features(name="capture", persistent=False)

    def __init__(self, capture: EmitCapture) -> None:
        self.capture = capture

    async def publish(self, records: Sequence[RawRecord]) -> None:
        if self.capture.fail_with is not None:
            raise self.capture.fail_with
        self.capture.emitted.extend(Emitted(record) for record in records)

    async def subscribe(self, spec: SubscriptionSpec) -> Subscription:
        raise ConfigurationError("an EmitCapture records emits; it cannot be subscribed to")

    async def provision(self, channels: Sequence[str]) -> None:
        return None

    async def close(self) -> None:
        return None


class EmitCapture:
    """Records what emitters made by :meth:`emitter` emit, without a broker.

    Events go through the real sealing path (codec, context headers, reserved-name checks),
    so an event that could not be emitted fails here too. Set ``fail_with`` to an exception
    to make every emit raise it (to test a handler's failure path).
    """

    def __init__(self) -> None:
        self.emitted: list[Emitted] = []
        self.fail_with: BaseException | None = None
        self.driver: Driver = _Recorder(self)

    def emitter(
        self, *, codec: str = "json", middlewares: Sequence[EmitMiddleware] = ()
    ) -> Emitter:
        return Emitter(self.driver, codec=codec, middlewares=middlewares)

    def on(self, channel: str) -> list[Emitted]:
        """What was emitted to ``channel``, in order."""
        return [e for e in self.emitted if e.channel == channel]

    def payloads(self, channel: str, payload_type: Any = None) -> list[Any]:
        """The decoded payloads emitted to ``channel``, in order."""
        return [e.payload(payload_type) for e in self.on(channel)]

    def clear(self) -> None:
        self.emitted.clear()
