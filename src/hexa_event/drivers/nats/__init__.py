"""The ``nats://`` driver: NATS JetStream over nats-py (extra ``[nats]``)."""

from .driver import NatsDriver
from .naming import channel_subject, consumer_name, subject_channel
from .options import NatsOptions, NatsSubscriptionOptions

__all__ = [
    "NatsDriver",
    "NatsOptions",
    "NatsSubscriptionOptions",
    "channel_subject",
    "consumer_name",
    "subject_channel",
]
