"""What a member holds: leased partitions (cursor, settled prefix) and the deliveries of them."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from ...driver import Delivery, RawRecord

Pos = tuple[int, int]
"""A position in a partition: (inserting transaction id, row id); txid is 0 on SQLite."""


@dataclass(slots=True, eq=False)
class Part:
    """One leased (channel, partition): ``cursor`` is the last row read into memory,
    ``committed`` the settled prefix (the position to store), ``outstanding`` the rows read
    above it in order with settled flags, ``skip`` rows above it the group acked before
    (``hexa_acked``: not handed out)."""

    channel: str
    number: int
    cursor: Pos
    committed: Pos
    outstanding: OrderedDict[Pos, bool] = field(default_factory=OrderedDict)
    dirty: bool = False
    drained: bool = False
    woken: bool = False
    """Rows were committed to its channel since its read began (not drained after all)."""
    owned: bool = True
    releasing: bool = False
    blocked_until_ms: int = 0
    skip: set[Pos] = field(default_factory=set)

    @property
    def active(self) -> bool:
        """Held and not being given up: its rows may be handed out."""
        return self.owned and not self.releasing

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
        while od:
            first = next(iter(od))
            if not od[first]:
                break
            od.popitem(last=False)
            self.committed = first
            self.dirty = True


class SqlDelivery(Delivery):
    """A row handed to this member. ``native`` is ``{"log_id", "txid", "partition"}``.

    ``redelivered``: it came from ``hexa_redeliveries``; ``applied`` is set once
    :meth:`SqlSubscription.settle` took its outcome into account (a second call is a no-op).
    """

    __slots__ = ("applied", "part", "pos", "redelivered", "sub")

    def __init__(
        self,
        sub: object,
        part: Part,
        pos: Pos,
        record: RawRecord,
        delivery_count: int,
        timestamp: float,
        redelivered: bool = False,
    ) -> None:
        # Hot path (one per row read): the base class's slots set here rather than through
        # super(), and the coordinates built only when asked.
        self.record = record
        self.delivery_count = delivery_count
        self.timestamp = timestamp
        self.outcome = None
        self.delay = 0.0
        self.sub = sub
        self.part = part
        self.pos = pos
        self.redelivered = redelivered
        self.applied = False

    # Read-only here: only the driver sets a delivery's coordinates.
    @property
    def coordinates(self) -> str:  # type: ignore[override]
        """``<channel>-<partition>-<row id>``."""
        return f"{self.record.channel}-{self.part.number}-{self.pos[1]}"

    def again(self) -> SqlDelivery:
        """The same row to hand out once more (a nack without delay)."""
        count, timestamp = self.delivery_count + 1, self.timestamp or 0.0
        return SqlDelivery(
            self.sub, self.part, self.pos, self.record, count, timestamp, self.redelivered
        )

    @property
    def native(self) -> object:
        return {"log_id": self.pos[1], "txid": self.pos[0], "partition": self.part.number}
