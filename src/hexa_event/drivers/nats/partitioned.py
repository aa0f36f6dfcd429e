"""One member of an action on a partitioned stream: the partitions it holds, leased.

A :class:`~.consumer.NatsSubscription` per partition held (agreed through
:mod:`.membership`); on a change it opens the partitions gained and hands over those lost
(:meth:`~.consumer.NatsSubscription.revoke`), at the same time. Hand-over and takeover
after a crash: docs/engines/nats.md, "Order" (Hand-over).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import Mapping, Sequence

from nats.aio.client import Client

from ...driver import ALL_CHANNELS, Delivery, Subscription, SubscriptionSpec, SubscriptionStatus
from ...errors import DriverError
from ..kit.buffer import DeliveryBuffer
from .client import retrying, stopped
from .consumer import Handout, Link, NatsDelivery, NatsSubscription
from .membership import Membership, assign
from .options import NatsSubscriptionOptions
from .streams import JetStreamApi, members_bucket

log = logging.getLogger(__name__)


class PartitionedSubscription(Subscription):
    """A member of an action that holds some of the stream's partitions."""

    def __init__(
        self,
        link: Link,
        nc: Client,
        api: JetStreamApi,
        spec: SubscriptionSpec,
        options: NatsSubscriptionOptions,
        name: str,
    ) -> None:
        self._stream = link.options.stream
        self._api = api
        self._partitions = link.options.partitions
        self._consumers = [f"{name}%p{n}" for n in range(self._partitions)]
        pinned = dataclasses.replace(options, failover=True)
        self._open = functools.partial(NatsSubscription, link, nc, api, spec, pinned)
        self._membership = Membership(
            nc,
            api,
            bucket=members_bucket(self._stream),
            group=name,
            lease=options.takeover_after,
            interval=options.heartbeat,
            repair=link.repair,
        )
        self._ephemeral = spec.ephemeral
        self._prefetch = max(1, spec.prefetch)
        self._hand_over_within = options.hand_over_within
        self._children: dict[int, NatsSubscription] = {}
        self._leaving: set[NatsSubscription] = set()  # being handed over
        self._ready: Handout = DeliveryBuffer(self._take)  # woken (or failed) by the partitions
        self._task: asyncio.Task[None] | None = None
        self._turn = 0
        self._error = ""
        self._closed = False
        self._fatal: DriverError | None = None

    @property
    def member(self) -> str:
        """This member's id in the action's membership bucket."""
        return self._membership.member

    @property
    def partitions(self) -> tuple[int, ...]:
        """The partitions this member holds (or is taking over)."""
        return tuple(sorted(self._children))

    async def start(self) -> None:
        """Join the action's members and open the partitions this member holds."""
        try:
            members = await self._membership.join()
            await self._reconcile(members)
        except BaseException:
            await self.close()  # no lease left behind to hold partitions nobody pulls
            raise
        self._task = asyncio.create_task(
            self._run(), name=f"hexa-event nats partitions {self._membership.member}"
        )

    def on_connection_closed(self, reason: str) -> None:
        """The connection closed for good: ``fetch`` raises (see the unpartitioned one)."""
        if self._fatal is None:
            self._fatal = DriverError(reason, retriable=False)
            self._ready.fail(self._fatal)
        for child in self._children.values():
            child.on_connection_closed(reason)

    def on_reconnect(self) -> None:
        for child in self._children.values():
            child.on_reconnect()
        self._membership.poke()

    async def _run(self) -> None:
        while not self._closed:
            await self._membership.changed.wait()
            self._membership.changed.clear()
            try:
                await self._reconcile(self._membership.members)
                self._error = ""
            except Exception as exc:  # a DriverError, or a client error mid-reconnect
                self._error = retrying("could not take over partitions", exc)
                await asyncio.sleep(1.0)
                self._membership.changed.set()

    async def _reconcile(self, members: tuple[str, ...]) -> None:
        """Hand over the partitions lost and open those gained, at the same time (a
        partition that fails to open does not hold up the hand-overs)."""
        wanted = assign(members, self._partitions, self._membership.member)
        held = set(self._children)
        gained = sorted(wanted - held)
        lost = sorted(held - wanted)
        if gained or lost:
            log.info(
                "member %s of %d: partitions %s (gaining %s, handing over %s)",
                self._membership.member,
                len(members),
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
        # Taken before cancelling: a hand-over cancelled midway forgets its partitions.
        children = {*self._children.values(), *self._leaving}
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        others = [m for m in self._membership.members if m != self._membership.member]
        await self._membership.leave()
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
        error = str(self._fatal) if self._fatal else self._error or self._membership.error
        if not error and not self._closed:
            error = stopped(self._task, f"the partition loop of member {self.member}")
        lags: list[int] = []
        held: list[str] = []
        for child in self._children.values():
            status = child.status()
            held.extend(status.assignment)
            lags.extend([status.lag] if status.lag is not None else [])
            error = str(child.fatal) if child.fatal is not None else error or status.error
        members = self._membership.members
        place = members.index(self.member) + 1 if self.member in members else 0
        held.append(f"member {self.member} ({place} of {len(members)})")
        return SubscriptionStatus(
            assignment=tuple(held), error=error, lag=sum(lags) if lags else None
        )
