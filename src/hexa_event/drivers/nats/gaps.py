"""Deliveries lost in transit: a pinned consumer holds its later records until they return.

Only one member pulls a pinned consumer, so the consumer sequences it receives follow one
another unless deliveries were lost on a connection that dropped. From a gap seen right
after the pull was disrupted (:meth:`LostInTransit.suspect`), later first deliveries are
parked until the lost ones come back, are due and were not sent, or the consumer is idle.
The rules and why: docs/engines/nats.md, "Deliveries lost in transit" and "Internals".
"""

from __future__ import annotations

import logging
from typing import Generic, Protocol, TypeVar

log = logging.getLogger(__name__)

_AFTER = 0.05
"""Seconds a parked record given back waits beyond the lost ones' due time."""


class Numbered(Protocol):
    """What the gap tracking needs of a delivery."""

    seq: int  # the record's stream sequence
    cseq: int  # the delivery's consumer sequence
    delivery_count: int


T = TypeVar("T", bound=Numbered)


class LostInTransit(Generic[T]):
    """Tracks one pinned consumer's delivery sequence; parks records behind a gap."""

    def __init__(self, ack_wait: float, margin: float, pinned: bool = True) -> None:
        self._pinned = pinned  # False: several members share the numbers; nothing is held
        self._ack_wait = ack_wait
        self._margin = margin
        self._last: int | None = None  # the consumer sequence of the last delivery
        self._first_max = 0  # the highest stream sequence first delivered before the hold
        self._parked: dict[int, T] = {}
        self._missing = 0
        self._returned: set[int] = set()
        self._due = 0.0
        self._suspect = False
        self.lost = 0
        """Deliveries found missing since this consumer started (a figure for tests)."""

    def __len__(self) -> int:
        """Records parked now."""
        return len(self._parked)

    @property
    def holding(self) -> bool:
        return self._missing > 0

    def parked(self) -> list[T]:
        return list(self._parked.values())

    def admit(self, delivery: T, now: float) -> list[T]:
        """The deliveries to hand out now, in stream order: ``delivery`` itself, none (it
        is parked), or with it the records parked until it came."""
        self.seen(delivery.cseq, now)
        if not self._missing:
            if delivery.delivery_count == 1:
                self._first_max = max(self._first_max, delivery.seq)
            return [delivery]
        if delivery.seq in self._parked:
            self._parked[delivery.seq] = delivery  # its ack_wait ran out: the newer copy
            return []
        if delivery.delivery_count == 1:
            self._parked[delivery.seq] = delivery
            if now >= self._due:
                return self._release("the server sent a new record after they were due")
            return []
        if delivery.seq > self._first_max and delivery.seq not in self._returned:
            self._returned.add(delivery.seq)
            self._missing -= 1
        # A redelivery comes before what is parked unless it is later in the stream (lost
        # at a second gap, after records parked at the first): then it waits with them.
        now_out = [delivery]
        if self._parked and delivery.seq > min(self._parked):
            self._parked[delivery.seq] = delivery
            now_out = []
        if not self._missing:
            return [*now_out, *self._release("they came back")]
        return now_out

    def suspect(self) -> None:
        """The pull was disrupted (a reconnect, no heartbeat, a new consumer leader): a gap
        before the next delivery is deliveries lost in transit."""
        self._suspect = self._pinned

    def probing(self, now: float) -> int:
        """Records to ask for even with prefetch full: the lost ones, once they are due."""
        return self._missing if self._missing and now >= self._due else 0

    def expire(self, now: float) -> list[T]:
        """The parked records, when the lost ones did not come in time (none is due)."""
        if self._missing and now >= self._due + self._margin:
            return self._release("none came within their due time")
        return []

    def describe(self, now: float) -> str:
        """What is held, for health ("" when nothing is)."""
        if not self._missing:
            return ""
        left = max(0.0, self._due + self._margin - now)
        return (
            f"{self._missing} deliveries lost in transit (a connection dropped); "
            f"{len(self._parked)} later records wait until the server sends them again, "
            f"at most {left:.0f}s more, so that no key's later record overtakes them"
        )

    def give_back(self, now: float) -> list[tuple[T, float]]:
        """The parked records, each with the time left until the lost ones are due."""
        delay = max(0.0, self._due - now) + _AFTER if self._missing else 0.0
        out = [(d, delay) for d in self._parked.values()]
        self._reset()
        return out

    def clear(self) -> list[T]:
        """The parked records (the member is closing)."""
        return [delivery for delivery, _ in self.give_back(0.0)]

    def seen(self, cseq: int, now: float) -> None:
        """A delivery numbered ``cseq`` arrived (:meth:`admit` says so itself)."""
        last, self._last = self._last, cseq
        suspect, self._suspect = self._suspect, False
        if last is None or cseq == last + 1:
            return
        if cseq <= last:
            log.info(
                "consumer sequence went back from %d to %d (the server lost its consumer "
                "state or made the consumer again): counting anew",
                last,
                cseq,
            )
            return
        if not suspect:
            return  # deliveries another member got while the pin was elsewhere
        gap = cseq - last - 1
        self.lost += gap
        if not self._missing:
            self._returned.clear()
        self._missing += gap
        self._due = now + self._ack_wait + self._margin
        log.warning(
            "%d deliveries were lost in transit (consumer sequence %d after %d); holding "
            "later records until the server sends them again (at most %.1fs)",
            gap,
            cseq,
            last,
            self._ack_wait + 2 * self._margin,
        )

    def _release(self, why: str) -> list[T]:
        out = sorted(self._parked.values(), key=lambda d: d.seq)
        if self._missing:
            log.warning(
                "releasing %d held records with %d lost deliveries not back: %s",
                len(out),
                self._missing,
                why,
            )
        else:
            log.info("the lost deliveries came back; releasing %d held records", len(out))
        self._reset()
        return out

    def _reset(self) -> None:
        self._first_max = max([self._first_max, *self._parked, *self._returned])
        self._parked.clear()
        self._missing = 0
        self._returned.clear()
