"""Many NATS messages written at once: a batch's PUB commands joined into one command in
nats-py's pending buffer (``_send_command``, ``_flush_pending``; why: the Batched writes
of docs/engines/stan.md). A client whose ``publish`` is wrapped gets one ``publish`` per
message.
"""

from __future__ import annotations

import nats.errors
from nats.aio.client import Client as NatsClient

_PUBLISH = NatsClient.publish


def pub_head(subject: str, reply: str = "") -> bytes:
    """The start of a PUB command to ``subject`` (with ``reply``) for :meth:`Writes.add`,
    built once per subject."""
    return f"PUB {subject} {reply} ".encode() if reply else f"PUB {subject} ".encode()


class Writes:
    """The PUB commands of one batch, written by :meth:`flush`."""

    __slots__ = ("nc", "parts")

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self.parts: list[bytes] = []

    def add(self, head: bytes, payload: bytes) -> None:
        """One message; ``head`` from :func:`pub_head`."""
        self.parts += (head, b"%d\r\n" % len(payload), payload, b"\r\n")

    async def flush(self) -> None:
        """Write what was added (and forget it); raises what ``publish`` would raise."""
        parts = self.parts
        if not parts:
            return
        self.parts = []
        nc = self.nc
        if getattr(nc.publish, "__func__", None) is not _PUBLISH:  # wrapped: one by one
            for head, payload in zip(parts[0::4], parts[2::4], strict=True):
                _, subject, *reply = head.decode().split()
                await nc.publish(subject, payload, reply=reply[0] if reply else "")
            return
        command = b"".join(parts)
        if nc.is_closed:
            raise nats.errors.ConnectionClosedError
        if nc.is_draining_pubs:
            raise nats.errors.ConnectionDrainingError
        if not nc.is_connected:
            limit = nc._max_pending_size
            if limit <= 0 or len(command) + nc._pending_data_size > limit:
                raise nats.errors.OutboundBufferLimitError
        nc.stats["out_msgs"] += len(parts) // 4
        nc.stats["out_bytes"] += sum(map(len, parts[2::4]))  # the payloads
        await nc._send_command(command)
        if nc._flush_queue is not None and nc._flush_queue.empty():
            await nc._flush_pending()
