"""The ``nats://`` driver: NATS JetStream over nats-py (extra ``[nats]``)."""

from .driver import NatsDriver
from .naming import channel_subject, consumer_name, partition_of, subject_channel, subject_partition
from .options import NatsOptions, NatsSubscriptionOptions

__all__ = [
    "NatsDriver",
    "NatsOptions",
    "NatsSubscriptionOptions",
    "channel_subject",
    "consumer_name",
    "partition_of",
    "subject_channel",
    "subject_partition",
]
