"""What a member holds: leased partitions (cursor, settled prefix) and the deliveries of them."""

from __future__ import annotations

from collections import OrderedDict

from ...driver import Delivery, RawRecord

Pos = tuple[int, int]
"""A position in a partition: (inserting transaction id, row id); txid is 0 on SQLite."""


class Part:
    """One leased (channel, partition): cursor, settled prefix, deliveries not yet settled."""

    __slots__ = (
        "blocked_until_ms",
        "channel",
        "committed",
        "cursor",
        "dirty",
        "drained",
        "number",
        "outstanding",
        "owned",
        "redeliveries",
        "releasing",
        "skip",
    )

    def __init__(self, channel: str, number: int, pos: Pos) -> None:
        self.channel = channel
        self.number = number
        self.cursor: Pos = pos
        """The last row read into memory."""
        self.committed: Pos = pos
        """Every row up to here is settled: the position to store."""
        self.outstanding: OrderedDict[Pos, bool] = OrderedDict()
        """Rows read and not yet covered by ``committed``, in order, with settled flags."""
        self.dirty = False
        self.drained = False
        self.owned = True
        self.releasing = False
        self.redeliveries = 0
        self.blocked_until_ms = 0
        self.skip: set[Pos] = set()
        """Rows above ``committed`` the group acked before (``hexa_acked``): not handed out."""

    def acked_above(self) -> list[Pos]:
        """Rows above ``committed`` known to be acked: settled ones read, and ``skip``."""
        acked = {pos for pos, settled in self.outstanding.items() if settled}
        acked.update(pos for pos in self.skip if pos > self.committed)
        return sorted(acked)

    def settle(self, pos: Pos) -> None:
        od = self.outstanding
        if pos not in od:
            return
        od[pos] = True
        advanced = False
        while od:
            first = next(iter(od))
            if not od[first]:
                break
            od.popitem(last=False)
            self.committed = first
            advanced = True
        if advanced:
            self.dirty = True

    @property
    def idle(self) -> bool:
        return not self.outstanding and self.redeliveries == 0


class SqlDelivery(Delivery):
    """A row handed to this member. ``native`` is ``{"log_id", "txid", "partition"}``.

    ``part``, ``pos`` and ``redelivered`` say where the row came from (its partition state,
    its position, and whether it came from ``hexa_redeliveries``); ``applied`` is set once
    :meth:`SqlSubscription.settle` took its outcome into account (a second call is a no-op).
    """

    __slots__ = ("applied", "part", "pos", "redelivered", "sub")

    def __init__(
        self,
        sub: object,
        part: Part,
        pos: Pos,
        record: RawRecord,
        *,
        redelivered: bool,
        delivery_count: int,
        timestamp: float,
    ) -> None:
        super().__init__(
            record,
            coordinates=f"{record.channel}-{part.number}-{pos[1]}",
            delivery_count=delivery_count,
            timestamp=timestamp,
        )
        self.sub = sub
        self.part = part
        self.pos = pos
        self.redelivered = redelivered
        self.applied = False

    @property
    def native(self) -> object:
        return {"log_id": self.pos[1], "txid": self.pos[0], "partition": self.part.number}
