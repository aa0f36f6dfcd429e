"""Many NATS messages written at once: a batch's PUB commands joined into one command.

nats-py's ``publish`` is one call per message (checks, a protocol line by f-string, two
counters, a pending-buffer append, a flush kick): a quarter of what a STAN publish or Ack
cost the driver. The driver's PubMsgs and Acks go out in batches to subjects it made and
checked itself, so a batch is written as one command into nats-py's pending buffer: the
bytes ``publish`` would write, its checks and counters, one flush kick. That reaches into
nats-py's client (``_send_command``, ``_flush_pending``, the pending buffer, all there since
nats-py 2.0); a client without them, or whose ``publish`` is not nats-py's own (wrapped by
instrumentation or a test), gets the messages one by one through ``publish``.
"""

from __future__ import annotations

import nats.errors
from nats.aio.client import Client as NatsClient

_INTERNALS = ("_send_command", "_flush_pending", "_flush_queue", "_pending_data_size")
_PUBLISH = NatsClient.publish


def pub_head(subject: str, reply: str = "") -> bytes:
    """The start of a PUB command to ``subject`` (with ``reply``) for :meth:`Writes.add`,
    built once per subject."""
    return f"PUB {subject} {reply} ".encode() if reply else f"PUB {subject} ".encode()


class Writes:
    """The PUB commands of one batch, written by :meth:`flush`."""

    __slots__ = ("count", "nc", "parts", "size")

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self.parts: list[bytes] = []
        self.count = 0
        self.size = 0

    def add(self, head: bytes, payload: bytes) -> None:
        """One message; ``head`` from :func:`pub_head`."""
        self.parts += (head, b"%d\r\n" % len(payload), payload, b"\r\n")
        self.count += 1
        self.size += len(payload)

    async def flush(self) -> None:
        """Write what was added (and forget it); raises what ``publish`` would raise."""
        parts, count, size = self.parts, self.count, self.size
        if not parts:
            return
        self.parts, self.count, self.size = [], 0, 0
        nc = self.nc
        command = b"".join(parts)
        own = getattr(nc.publish, "__func__", None) is _PUBLISH
        if not own or not all(hasattr(nc, name) for name in _INTERNALS):
            await _one_by_one(nc, command)
            return
        if nc.is_closed:
            raise nats.errors.ConnectionClosedError
        if nc.is_draining_pubs:
            raise nats.errors.ConnectionDrainingError
        if not nc.is_connected:
            limit = nc._max_pending_size
            if limit <= 0 or len(command) + nc._pending_data_size > limit:
                raise nats.errors.OutboundBufferLimitError
        nc.stats["out_msgs"] += count
        nc.stats["out_bytes"] += size
        await nc._send_command(command)
        if nc._flush_queue is not None and nc._flush_queue.empty():
            await nc._flush_pending()


async def _one_by_one(nc: NatsClient, command: bytes) -> None:
    """Send the PUB commands of ``command`` through ``publish``."""
    pos = 0
    while pos < len(command):
        end = command.index(b"\r\n", pos)
        _, subject, *reply, size = command[pos:end].decode().split(" ")
        pos = end + 2 + int(size)
        await nc.publish(subject, command[end + 2 : pos], reply=reply[0] if reply else "")
        pos += 2
