"""hexa-event: emit and handle events over Kafka, Pulsar, NATS, an SQL log or memory.

import hexa_event as he

conn = he.connect("sqlite:///app.db")
event_id = await conn.emitter().emit(he.Event("orders", "order-42", {"total": 10}))

receiver = conn.receiver("billing-service")

@receiver.subscribe("orders", action="billing.charge-card")
async def charge(ctx: he.Context, msg: he.Message[dict]) -> None: ...

async with receiver:
    await receiver.wait_closed()
"""

from . import headers
from .batching import Batch, BatchFailed
from .codecs import Codec, codec_names, get_codec, register_codec
from .connect import Connection, connect, known_schemes, register_driver
from .context import (
    HEXA_EVENT_HANDLER_ACTION_NAME,
    HEXA_EVENT_ID,
    HEXA_ROOT_EVENT_HANDLER_ACTION_NAME,
    HEXA_ROOT_EVENT_ID,
    Context,
    User,
    UserType,
)
from .deadletters import DeadLetter, read_dead_letter, subscribe_dead_letters
from .driver import (
    Delivery,
    Driver,
    Features,
    Outcome,
    RawRecord,
    Subscription,
    SubscriptionSpec,
    SubscriptionStatus,
)
from .emitter import EmitCall, EmitMiddleware, Emitter
from .envelope import CloudEvents, Envelope
from .errors import (
    AlreadySettledError,
    ChannelNotFoundError,
    ClosedError,
    ConfigurationError,
    DecodeError,
    DriverError,
    EncodeError,
    HexaEventError,
    InvalidArgumentError,
    InvalidEventError,
    NotARequestError,
    NotStoredError,
    PartialPublishError,
    PayloadTypeError,
    PermanentError,
    RequestTimeoutError,
    SubscriptionBusyError,
    UnknownCodecError,
    UnknownSchemeError,
)
from .event import Event, Message
from .middleware import Handler, Middleware, chain, log_errors, timeout
from .propagation import (
    BaggagePropagator,
    CompositePropagator,
    HexaPropagator,
    KeysPropagator,
    Propagator,
    TraceContextPropagator,
    default_propagator,
)
from .publishing import Publication, PublishCall, PublishMiddleware
from .receiver import Receiver
from .retry import NO_RETRIES, RetryPolicy, dead_letter_channel, retry_channel
from .runner import run, serve

__version__ = "0.1.0"

__all__ = [
    "HEXA_EVENT_HANDLER_ACTION_NAME",
    "HEXA_EVENT_ID",
    "HEXA_ROOT_EVENT_HANDLER_ACTION_NAME",
    "HEXA_ROOT_EVENT_ID",
    "NO_RETRIES",
    "AlreadySettledError",
    "BaggagePropagator",
    "Batch",
    "BatchFailed",
    "ChannelNotFoundError",
    "ClosedError",
    "CloudEvents",
    "Codec",
    "CompositePropagator",
    "ConfigurationError",
    "Connection",
    "Context",
    "DeadLetter",
    "DecodeError",
    "Delivery",
    "Driver",
    "DriverError",
    "EmitCall",
    "EmitMiddleware",
    "Emitter",
    "EncodeError",
    "Envelope",
    "Event",
    "Features",
    "Handler",
    "HexaEventError",
    "HexaPropagator",
    "InvalidArgumentError",
    "InvalidEventError",
    "KeysPropagator",
    "Message",
    "Middleware",
    "NotARequestError",
    "NotStoredError",
    "Outcome",
    "PartialPublishError",
    "PayloadTypeError",
    "PermanentError",
    "Propagator",
    "Publication",
    "PublishCall",
    "PublishMiddleware",
    "RawRecord",
    "Receiver",
    "RequestTimeoutError",
    "RetryPolicy",
    "Subscription",
    "SubscriptionBusyError",
    "SubscriptionSpec",
    "SubscriptionStatus",
    "TraceContextPropagator",
    "UnknownCodecError",
    "UnknownSchemeError",
    "User",
    "UserType",
    "__version__",
    "chain",
    "codec_names",
    "connect",
    "dead_letter_channel",
    "default_propagator",
    "get_codec",
    "headers",
    "known_schemes",
    "log_errors",
    "read_dead_letter",
    "register_codec",
    "register_driver",
    "retry_channel",
    "run",
    "serve",
    "subscribe_dead_letters",
    "timeout",
]
