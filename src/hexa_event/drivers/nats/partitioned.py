"""One member of an action on a partitioned stream: the partitions it holds, leased.

Each member keeps its lease (a key with a per-message TTL) in the stream's members bucket
and derives from the live members the same assignment as every other (:func:`assign`);
the pinned consumers, not the bucket, make one member at a time receive a partition.
Hand-over and takeover after a crash: docs/engines/nats.md, "Order" and "Internals".
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import socket
import uuid
from collections.abc import Mapping, Sequence

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSub

from ...driver import ALL_CHANNELS, Delivery, Subscription, SubscriptionSpec, SubscriptionStatus
from ...errors import DriverError
from ..kit.buffer import DeliveryBuffer
from .client import retrying, stopped, woken
from .consumer import Handout, Link, NatsDelivery, NatsSubscription
from .options import NatsSubscriptionOptions
from .streams import JetStreamApi, members_bucket

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
        ranked = sorted(ordered, key=lambda m: _rank(m, partition), reverse=True)
        owner = next(m for m in ranked if counts[m] < floor or (counts[m] == floor and extra > 0))
        if counts[owner] == floor:
            extra -= 1  # it takes one of the partitions left over by an even split
        counts[owner] += 1
        if owner == me:
            mine.add(partition)
    return frozenset(mine)


def _rank(member: str, partition: int) -> bytes:
    return hashlib.blake2b(f"{member}/{partition}".encode(), digest_size=8).digest()


class PartitionedSubscription(Subscription):
    """A member of an action that holds some of the stream's partitions: ``member`` is its
    random id, ``members`` the live ones as last read (it included)."""

    def __init__(
        self,
        link: Link,
        nc: Client,
        api: JetStreamApi,
        spec: SubscriptionSpec,
        options: NatsSubscriptionOptions,
        name: str,
    ) -> None:
        self._nc = nc
        self._api = api
        self._stream = link.options.stream
        self._partitions = link.options.partitions
        self._consumers = [f"{name}%p{n}" for n in range(self._partitions)]
        pinned = dataclasses.replace(options, failover=True)
        self._open = functools.partial(NatsSubscription, link, nc, api, spec, pinned)
        self._repair = link.repair  # creates the bucket again (a server that lost its store)
        bucket = members_bucket(self._stream)
        self.member = uuid.uuid4().hex[:12]
        self.members: tuple[str, ...] = (self.member,)
        self._bucket_stream = f"KV_{bucket}"
        self._lease_subject = f"$KV.{bucket}.{name}.{self.member}"
        self._filter = f"$KV.{bucket}.{name}.*"
        self._notify = f"_HEXA.members.{bucket}.{name}"
        self._lease = max(1, math.ceil(options.takeover_after))
        self._heartbeat = options.heartbeat
        self._body = json.dumps(
            {"member": self.member, "host": socket.gethostname(), "pid": os.getpid()}
        ).encode()
        self._changed = asyncio.Event()  # the members changed
        self._poked = asyncio.Event()  # read the members now
        self._notices: NatsSub | None = None
        self._ephemeral = spec.ephemeral
        self._prefetch = max(1, spec.prefetch)
        self._hand_over_within = options.hand_over_within
        self._children: dict[int, NatsSubscription] = {}
        self._leaving: set[NatsSubscription] = set()  # being handed over
        self._ready: Handout = DeliveryBuffer(self._take)  # woken (or failed) by the partitions
        self._task: asyncio.Task[None] | None = None
        self._lease_task: asyncio.Task[None] | None = None
        self._turn = 0
        self._error = ""
        self._lease_error = ""
        self._closed = False
        self._fatal: DriverError | None = None

    @property
    def partitions(self) -> tuple[int, ...]:
        """The partitions this member holds (or is taking over)."""
        return tuple(sorted(self._children))

    async def start(self) -> None:
        """Write this member's lease, tell the others, read who is live, keep the lease
        alive, and open the partitions this member holds."""
        try:
            await self._put()
            self._notices = await self._nc.subscribe(self._notify, cb=self._on_notice)
            await self._nc.publish(self._notify, self.member.encode())
            await self._read()
            self._lease_task = asyncio.create_task(
                self._keep_lease(), name=f"hexa-event nats members {self._lease_subject}"
            )
            await self._reconcile()
        except BaseException:
            await self.close()  # no lease left behind to hold partitions nobody pulls
            raise
        self._task = asyncio.create_task(
            self._run(), name=f"hexa-event nats partitions {self.member}"
        )

    def on_connection_closed(self, reason: str) -> None:
        """The connection closed for good: ``fetch`` raises (see the unpartitioned one)."""
        if self._fatal is None:
            self._fatal = DriverError(reason, retriable=False)
            self._ready.fail(self._fatal)
        for child in self._children.values():
            child.on_connection_closed(reason)

    def renew(self) -> None:
        """The connection came back: each partition renews its pull; read the members."""
        for child in self._children.values():
            child.renew()
        self._poked.set()  # read the members again now

    async def _run(self) -> None:
        while not self._closed:
            await self._changed.wait()
            self._changed.clear()
            try:
                await self._reconcile()
                self._error = ""
            except Exception as exc:  # a DriverError, or a client error mid-reconnect
                self._error = retrying("could not take over partitions", exc)
                await asyncio.sleep(1.0)
                self._changed.set()

    async def _reconcile(self) -> None:
        """Hand over the partitions lost and open those gained, at the same time (a
        partition that fails to open does not hold up the hand-overs)."""
        wanted = assign(self.members, self._partitions, self.member)
        held = set(self._children)
        gained = sorted(wanted - held)
        lost = sorted(held - wanted)
        if gained or lost:
            log.info(
                "member %s of %d: partitions %s (gaining %s, handing over %s)",
                self.member,
                len(self.members),
                sorted(wanted),
                gained,
                lost,
            )
        leaving = [self._children.pop(p) for p in lost]
        self._leaving.update(leaving)
        handing_over = asyncio.gather(*(c.revoke(self._hand_over_within) for c in leaving))
        try:
            for partition in gained:
                if self._closed:
                    break
                child = self._open(self._consumers[partition], partition, self._ready)
                await child.start()
                self._children[partition] = child
        finally:
            for child in self._children.values():
                child.set_limit(-(-self._prefetch // len(self._children)))
            try:
                await handing_over
            finally:
                self._leaving.difference_update(leaving)

    # -- the lease ------------------------------------------------------------------------------

    async def _leave(self) -> None:
        """Stop renewing, remove this member's lease and tell the others at once."""
        if self._lease_task is not None:
            self._lease_task.cancel()
            await asyncio.gather(self._lease_task, return_exceptions=True)
        if self._nc.is_closed:
            return
        with contextlib.suppress(DriverError, nats.errors.Error):
            purge = {"filter": self._lease_subject}
            await self._api.request(f"STREAM.PURGE.{self._bucket_stream}", purge)
            await self._nc.publish(self._notify, self.member.encode())
        if self._notices is not None:
            with contextlib.suppress(Exception):
                await self._notices.unsubscribe()

    async def _on_notice(self, msg: Msg) -> None:
        if msg.data.decode(errors="replace") != self.member:
            self._poked.set()

    async def _put(self) -> None:
        headers = {"Nats-TTL": f"{self._lease}s"}
        try:
            reply = await self._nc.request(
                self._lease_subject, self._body, timeout=self._heartbeat * 2 + 1, headers=headers
            )
        except nats.errors.NoRespondersError:
            await self._repair()
            raise DriverError(
                f"the membership bucket of {self._lease_subject} is gone (no responders); "
                "it is created again"
            ) from None
        except (nats.errors.Error, TimeoutError) as exc:
            raise DriverError(f"could not renew the lease {self._lease_subject}: {exc!r}") from None
        answer = json.loads(reply.data) if reply.data else {}
        if answer.get("error"):
            raise DriverError(
                f"the membership bucket refused lease {self._lease_subject}: "
                f"{answer['error'].get('description')} (nats-server 2.11+ is needed for "
                "partitions: per-message TTLs)",
                retriable=False,
            )

    async def _read(self) -> None:
        subjects = await self._api.subjects(self._bucket_stream, self._filter)
        live = tuple(sorted({s.rpartition(".")[2] for s in subjects} | {self.member}))
        self._lease_error = ""
        if live != self.members:
            log.info("members of %s: %s (this one %s)", self._filter, live, self.member)
            self.members = live
            self._changed.set()

    async def _keep_lease(self) -> None:
        loop = asyncio.get_running_loop()
        renew_every = self._lease / 3
        renewed = loop.time()
        while not self._closed:
            await woken(self._poked, min(self._heartbeat, renew_every))
            try:
                if not self._nc.is_connected:
                    continue
                if loop.time() - renewed >= renew_every:
                    await self._put()
                    renewed = loop.time()
                await self._read()
            except Exception as exc:  # never dies silently: the lease would run out
                self._lease_error = retrying(f"membership of {self._filter}", exc)
                renewed = loop.time() - renew_every  # renew at the next turn

    # -- the contract ---------------------------------------------------------------------------

    async def fetch(self, max_count: int) -> Sequence[Delivery]:
        return await self._ready.fetch(max_count)

    def _take(self, _items: object, max_count: int) -> list[NatsDelivery]:
        """What the partitions buffered, starting with the next partition each time."""
        children = list(self._children.values())
        out: list[NatsDelivery] = []
        if children:
            self._turn = (self._turn + 1) % len(children)
            for child in children[self._turn :] + children[: self._turn]:
                out.extend(child.take(max_count - len(out)))
                if len(out) >= max_count:
                    break
        return out

    async def settle(self, deliveries: Sequence[Delivery]) -> None:
        by_owner: dict[NatsSubscription, list[Delivery]] = {}
        for delivery in deliveries:
            assert isinstance(delivery, NatsDelivery)
            by_owner.setdefault(delivery.owner, []).append(delivery)
        results = await asyncio.gather(
            *(owner.settle(batch) for owner, batch in by_owner.items()), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def close(self) -> None:
        """Leave the members (the others take the partitions), give back, unpin."""
        if self._closed:
            return
        self._closed = True
        self._ready.close()
        await asyncio.shield(self._close())  # to the end, also when the caller is cancelled

    async def _close(self) -> None:
        # Taken before cancelling: a hand-over cancelled midway forgets its partitions.
        children = {*self._children.values(), *self._leaving}
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        others = [m for m in self.members if m != self.member]
        await self._leave()
        children.update(self._children.values(), self._leaving)
        self._children.clear()
        self._leaving.clear()
        with contextlib.suppress(Exception):
            await asyncio.gather(*(child.close() for child in children))
        if self._ephemeral and not others:  # a throwaway group's last member
            await self._api.delete_consumers(self._stream, self._consumers)

    async def lag(self) -> Mapping[str, int] | None:
        """Pending plus ack-pending over every partition's consumer (held here or not)."""
        return {ALL_CHANNELS: await self._api.pending(self._stream, self._consumers)}

    def status(self) -> SubscriptionStatus:
        error = str(self._fatal) if self._fatal else self._error or self._lease_error
        if not error and not self._closed:
            error = stopped(self._task, f"the partition loop of member {self.member}")
        lags: list[int] = []
        held: list[str] = []
        for child in self._children.values():
            status = child.status()
            held.extend(status.assignment)
            lags.extend([status.lag] if status.lag is not None else [])
            error = str(child.fatal) if child.fatal is not None else error or status.error
        place = self.members.index(self.member) + 1  # the members always include this one
        held.append(f"member {self.member} ({place} of {len(self.members)})")
        return SubscriptionStatus(
            assignment=tuple(held), error=error, lag=sum(lags) if lags else None
        )
