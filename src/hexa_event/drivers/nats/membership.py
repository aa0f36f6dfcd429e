"""Who serves an action on a partitioned stream: leases in a JetStream key-value bucket.

Each member keeps a key with a per-message TTL (its lease) alive, reads the live members
at each heartbeat and when one joins or leaves, and derives the same assignment as every
other member (:func:`assign`). The pinned consumers, not the bucket, make one member at a
time receive a partition. Details: docs/engines/nats.md, "Order" (Receiving, partitions).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import socket
import uuid
from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSub

from ...errors import DriverError
from .client import retrying, woken
from .streams import JetStreamApi

log = logging.getLogger(__name__)


def assign(members: tuple[str, ...], partitions: int, me: str) -> frozenset[int]:
    """The partitions ``me`` holds among ``members`` (``me`` counted in), the same on every
    member: balanced rendezvous hashing, each partition to the member ranked first by
    ``blake2b("<member>/<partition>")`` that has room (equal shares to within one)."""
    ordered = sorted(set(members) | {me})
    floor, extra = divmod(partitions, len(ordered))
    counts = dict.fromkeys(ordered, 0)
    mine: set[int] = set()
    for partition in range(partitions):
        for member in sorted(ordered, key=lambda m: _rank(m, partition), reverse=True):
            count = counts[member]
            if count < floor or (count == floor and extra > 0):
                if count == floor:
                    extra -= 1
                counts[member] = count + 1
                if member == me:
                    mine.add(partition)
                break
    return frozenset(mine)


def _rank(member: str, partition: int) -> bytes:
    return hashlib.blake2b(f"{member}/{partition}".encode(), digest_size=8).digest()


class Membership:
    """One member's lease among the members of one action: ``member`` is its random id,
    ``members`` the live ones as last read (it included), ``error`` the bucket's problem."""

    def __init__(
        self,
        nc: Client,
        api: JetStreamApi,
        *,
        bucket: str,
        group: str,
        lease: float,
        interval: float,
        repair: Callable[[], Awaitable[None]],
    ) -> None:
        self._nc = nc
        self._api = api
        self._bucket_stream = f"KV_{bucket}"
        self.member = uuid.uuid4().hex[:12]
        self._subject = f"$KV.{bucket}.{group}.{self.member}"
        self._filter = f"$KV.{bucket}.{group}.*"
        self._notify = f"_HEXA.members.{bucket}.{group}"
        self._lease = max(1, math.ceil(lease))
        self._interval = interval
        self._repair = repair  # creates the bucket again (a server that lost its store)
        self.changed = asyncio.Event()
        """Set whenever the members change."""
        self._body = json.dumps(
            {"member": self.member, "host": socket.gethostname(), "pid": os.getpid()}
        ).encode()
        self.members: tuple[str, ...] = (self.member,)
        self.error = ""
        self._wake = asyncio.Event()
        self._sub: NatsSub | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def join(self) -> tuple[str, ...]:
        """Write this member's lease, tell the others, read who is live, keep it alive."""
        await self._put()
        self._sub = await self._nc.subscribe(self._notify, cb=self._on_notice)
        await self._nc.publish(self._notify, self.member.encode())
        await self._read()
        self._task = asyncio.create_task(
            self._run(), name=f"hexa-event nats members {self._subject}"
        )
        return self.members

    def poke(self) -> None:
        """Read the members again now (after a reconnect)."""
        self._wake.set()

    async def leave(self) -> None:
        """Remove this member's lease and tell the others at once. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._nc.is_closed:
            return
        with contextlib.suppress(DriverError, nats.errors.Error):
            purge = {"filter": self._subject}
            await self._api.request(f"STREAM.PURGE.{self._bucket_stream}", purge)
            await self._nc.publish(self._notify, self.member.encode())
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def _on_notice(self, msg: Msg) -> None:
        if msg.data.decode(errors="replace") != self.member:
            self._wake.set()

    async def _put(self) -> None:
        headers = {"Nats-TTL": f"{self._lease}s"}
        try:
            reply = await self._nc.request(
                self._subject, self._body, timeout=self._interval * 2 + 1, headers=headers
            )
        except nats.errors.NoRespondersError:
            await self._repair()
            raise DriverError(
                f"the membership bucket of {self._subject} is gone (no responders); "
                "it is created again"
            ) from None
        except (nats.errors.Error, TimeoutError) as exc:
            raise DriverError(f"could not renew the lease {self._subject}: {exc!r}") from None
        answer = json.loads(reply.data) if reply.data else {}
        if answer.get("error"):
            raise DriverError(
                f"the membership bucket refused lease {self._subject}: "
                f"{answer['error'].get('description')} (nats-server 2.11+ is needed for "
                "partitions: per-message TTLs)",
                retriable=False,
            )

    async def _read(self) -> None:
        subjects = await self._api.subjects(self._bucket_stream, self._filter)
        live = tuple(sorted({s.rpartition(".")[2] for s in subjects} | {self.member}))
        self.error = ""
        if live != self.members:
            log.info("members of %s: %s (this one %s)", self._filter, live, self.member)
            self.members = live
            self.changed.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        renew_every = self._lease / 3
        renewed = loop.time()
        while not self._closed:
            await woken(self._wake, min(self._interval, renew_every))
            try:
                if not self._nc.is_connected:
                    continue
                if loop.time() - renewed >= renew_every:
                    await self._put()
                    renewed = loop.time()
                await self._read()
            except Exception as exc:  # never dies silently: the lease would run out
                self.error = retrying(f"membership of {self._filter}", exc)
                renewed = loop.time() - renew_every  # renew at the next turn
