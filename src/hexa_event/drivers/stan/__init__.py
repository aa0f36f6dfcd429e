"""The ``stan://`` driver: legacy NATS Streaming, its protocol spoken over nats-py."""

from .consumer import StanDelivery, StanSubscription
from .driver import StanDriver
from .errors import StanChannelLimitError, StanClientIdInUseError, StanClusterNotFoundError
from .options import StanOptions, StanSubscriptionOptions

__all__ = [
    "StanChannelLimitError",
    "StanClientIdInUseError",
    "StanClusterNotFoundError",
    "StanDelivery",
    "StanDriver",
    "StanOptions",
    "StanSubscription",
    "StanSubscriptionOptions",
]
