"""The ``pulsar://`` driver: pulsar-client (the C++ client's binding) behind an asyncio bridge."""

from .admin import PulsarAdmin
from .driver import PulsarDriver
from .options import PulsarOptions, PulsarSubscriptionOptions, SubscriptionType
from .producer import partition_for_key

__all__ = [
    "PulsarAdmin",
    "PulsarDriver",
    "PulsarOptions",
    "PulsarSubscriptionOptions",
    "SubscriptionType",
    "partition_for_key",
]
