"""A loopback TCP proxy in front of a NATS server that loses one delivery in transit.

Everything passes through unchanged, except that the first JetStream delivery (a ``MSG``
or ``HMSG`` whose reply subject starts ``$JS.ACK.``) carrying ``marker`` in its headers or
payload is dropped, and the client's connection is cut right after it: what a client sees
when the server wrote a delivery to a connection that then dropped (a server stopped or
killed mid-send). The server counts the delivery as made and sends it again only after
``ack_wait``. The client reconnects through the proxy, and later connections pass whole.
Without a marker nothing is lost; :meth:`LosingProxy.cut` drops the connections at once,
and :meth:`LosingProxy.stall` makes them a silent dead link until then; what the server
sends to a subject in ``muted`` never reaches the client.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

_CRLF = b"\r\n"


class LosingProxy:
    """``url`` is the proxy's; ``dropped`` is set once the delivery was lost."""

    def __init__(self, upstream_url: str, marker: bytes | None = None) -> None:
        parts = urlsplit(upstream_url)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 4222)
        self._marker = marker
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.dropped = asyncio.Event()
        self.connections = 0
        """Client connections accepted so far (a reconnect makes one more)."""
        self.swallowed = bytearray()
        """What the client sent while the link was stalled (it never reached the server)."""
        self._stalled = False
        self.muted: set[bytes] = set()
        """Subjects whose messages from the server are dropped (the rest pass)."""
        self.url = ""

    async def __aenter__(self) -> LosingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"nats://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def cut(self) -> None:
        """Drop every connection now (the client sees its server gone and reconnects)."""
        for task in list(self._tasks):
            task.cancel()
        self._stalled = False

    def stall(self) -> None:
        """From now until :meth:`cut`, nothing passes either way and nothing is closed (a
        link gone silent): what the client sends is kept in ``swallowed``."""
        self._stalled = True

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        server_r, server_w = await asyncio.open_connection(*self._upstream)
        pumps = [
            asyncio.create_task(self._copy(client_r, server_w)),
            asyncio.create_task(self._from_server(server_r, client_w)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._tasks.difference_update(pumps)
            for writer in (client_w, server_w):
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    async def _copy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if self._stalled:
                self.swallowed.extend(data)
                continue
            writer.write(data)
            await writer.drain()

    async def _from_server(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Forward the server's protocol frame by frame; lose the marked delivery and end
        the connection there (the caller closes both sides)."""
        while True:
            line = await reader.readuntil(_CRLF)
            fields = line.split()
            op = fields[0].upper() if fields else b""
            body = b""
            if op in (b"MSG", b"HMSG"):
                body = await reader.readexactly(int(fields[-1]) + len(_CRLF))
                reply = fields[3] if len(fields) == (5 if op == b"MSG" else 6) else b""
                if (
                    self._marker is not None
                    and not self.dropped.is_set()
                    and reply.startswith(b"$JS.ACK.")
                    and self._marker in body
                ):
                    self.dropped.set()
                    return
            if self._stalled or (body and fields[1] in self.muted):
                continue
            writer.write(line + body)
            await writer.drain()
