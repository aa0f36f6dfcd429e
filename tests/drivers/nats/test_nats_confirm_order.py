"""A PING that confirms what was written (a settle's acks, a flush) goes to the server after
the commands queued before it: nats-py wrote it straight to the socket, ahead of what still
waited for its flusher, so the PONG vouched for none of it (a connection lost then lost the
acks while the settle had returned)."""

from __future__ import annotations

from typing import Any

import pytest

from hexa_event.drivers.nats.client import Client, confirm


async def test_a_confirm_is_written_after_the_commands_queued_before_it(
    nats_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    nc = Client()
    await nc.connect(nats_server)
    try:
        written: list[bytes] = []
        transport: Any = nc._transport
        write, writelines = transport.write, transport.writelines

        def write_one(data: bytes) -> None:
            written.append(bytes(data))
            write(data)

        def write_many(chunks: list[bytes]) -> None:
            written.extend(bytes(chunk) for chunk in chunks)
            writelines(chunks)

        monkeypatch.setattr(transport, "write", write_one)
        monkeypatch.setattr(transport, "writelines", write_many)
        for n in range(3):  # queued for the flusher, which has not run yet
            await nc.publish("hexa.confirm-order", f"ack-{n}".encode())
        await confirm(nc, 5.0)
        ping = written.index(b"PING\r\n")
        before = b"".join(written[:ping])
        assert all(f"ack-{n}".encode() in before for n in range(3)), written
    finally:
        await nc.close()
