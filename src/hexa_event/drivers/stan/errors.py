"""The NATS Streaming driver's own errors: each names what the server said and the fix."""

from __future__ import annotations

from ...errors import DriverError


class StanClusterNotFoundError(DriverError):
    """No streaming server answered the connect request for this cluster id."""

    def __init__(self, cluster_id: str, servers: str, timeout: float) -> None:
        self.cluster_id = cluster_id
        super().__init__(
            f"no NATS Streaming server answered for cluster id {cluster_id!r} at {servers} "
            f"within {timeout:g}s: check cluster_id (the server's --cluster_id, 'test-cluster' "
            "by default) and that the URL is the streaming server's own NATS port",
            retriable=False,
        )


class StanClientIdInUseError(DriverError):
    """Another live connection holds this client id."""

    def __init__(self, client_id: str, cluster_id: str) -> None:
        self.client_id = client_id
        super().__init__(
            f"STAN client id {client_id!r} is already connected to cluster {cluster_id!r} by "
            "another live connection: give each process its own client_id (leave it unset "
            "for a unique one), or close the other connection first",
            retriable=False,
        )


class StanChannelLimitError(DriverError):
    """The server refused to create one more channel (its ``--max_channels``)."""

    def __init__(self, channel: str, server_error: str) -> None:
        self.channel = channel
        super().__init__(
            f"the NATS Streaming server refused channel {channel!r} ({server_error!r}): its "
            "channel limit is reached; raise it with the server's --max_channels (-mc, 0 for "
            "no limit) or store_limits.max_channels, or use fewer channels",
            retriable=False,
        )


class StanRequestError(DriverError):
    """The server answered a protocol request with an error."""


def refused(channel: str, error: str, what: str) -> DriverError:
    """The server's refusal (``error``) of ``what`` on ``channel``, not to be retried."""
    if "too many channels" in error.lower():
        return StanChannelLimitError(channel, error)
    return StanRequestError(f"the NATS Streaming server refused {what}: {error}", retriable=False)


_GONE = ("unknown clientid", "invalid publish request", "no longer registered", "has been replaced")


def is_session_gone(error: str) -> bool:
    """Whether a server error text means our client id is no longer registered."""
    return any(text in error.lower() for text in _GONE)
