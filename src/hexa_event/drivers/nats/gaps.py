"""What a member holds back so that no key's later record overtakes an earlier one: the
key gate (:class:`KeyGate`, behind a nacked record of the key; retry channels are not
gated, a retry copy already left its key's order) and, on a pinned consumer, every first
delivery behind deliveries lost in transit (:class:`LostInTransit`). The rules and why:
docs/engines/nats.md, "Deliveries lost in transit" and "Internals".
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

log = logging.getLogger(__name__)

_AFTER = 0.05
"""Seconds a record given back waits beyond what held it (a key's nack delay, the lost
deliveries' due time)."""


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

    def restart(self) -> list[T]:
        """The consumer was made again (its numbers start anew, its stream's too when that
        was made again): forget the old numbers; the records parked behind them, in order
        (what was lost comes from the new consumer, if at all, as a first delivery)."""
        out = self._release("the consumer was made again") if self._parked else []
        self._reset()
        self._last = None
        self._first_max = 0
        return out

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
            self._first_max = 0  # the stream sequences first delivered by the new numbering
            return
        if not suspect:
            return  # deliveries another member got while the pin was elsewhere
        gap = cseq - last - 1
        self.lost += gap
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


class Gated(Protocol):
    """What the gate needs of a delivery."""

    seq: int

    @property
    def gate_key(self) -> tuple[str, str]: ...


G = TypeVar("G", bound=Gated)


@dataclass(slots=True)
class _Block(Generic[G]):
    seq: int
    deadline: float
    held: list[G] = field(default_factory=list)


class KeyGate(Generic[G]):
    """Once a record of (channel, key) is nacked, holds that key's later records until it
    came back and was settled, or its delay plus ``ack_wait`` passed (another member got
    it)."""

    def __init__(self, ack_wait: float) -> None:
        self._ack_wait = ack_wait
        self._blocks: dict[tuple[str, str], _Block[G]] = {}

    def __len__(self) -> int:
        """Records held now."""
        return sum(len(block.held) for block in self._blocks.values())

    def held(self) -> Iterator[G]:
        for block in self._blocks.values():
            yield from block.held

    def admit(self, delivery: G) -> bool:
        """True when ``delivery`` may be handed out now; otherwise the gate keeps it."""
        if not self._blocks:
            return True
        block = self._blocks.get(delivery.gate_key)
        if block is None or delivery.seq <= block.seq:
            return True
        block.held.append(delivery)
        return False

    def nacked(self, delivery: G, delay: float, now: float) -> None:
        """``delivery`` goes back to the server: block its key behind it."""
        key = delivery.gate_key
        block = self._blocks.get(key)
        deadline = now + delay + self._ack_wait
        if block is None:
            self._blocks[key] = _Block[G](delivery.seq, deadline)
        elif delivery.seq <= block.seq:
            block.seq = delivery.seq
            block.deadline = deadline

    def done(self, delivery: G) -> list[G]:
        """``delivery`` was acked or terminated: the records it held back, in order."""
        key = delivery.gate_key
        block = self._blocks.get(key)
        if block is None or block.seq != delivery.seq:
            return []
        del self._blocks[key]
        return sorted(block.held, key=lambda d: d.seq)

    def expire(self, now: float) -> list[G]:
        """Let go of keys whose blocking record did not come back in time."""
        released: list[G] = []
        for key, block in list(self._blocks.items()):
            if now > block.deadline:
                del self._blocks[key]
                if block.held:
                    log.info(
                        "record %d of key %r did not come back (another member has it?); "
                        "releasing %d later records of that key",
                        block.seq,
                        key[1],
                        len(block.held),
                    )
                released.extend(sorted(block.held, key=lambda d: d.seq))
        return released

    def give_back(self, now: float) -> list[tuple[G, float]]:
        """Everything held, each with what remains of its key's nack delay (a hand-over)."""
        out = [
            (d, max(0.0, block.deadline - self._ack_wait - now) + _AFTER)
            for block in self._blocks.values()
            for d in block.held
        ]
        self._blocks.clear()
        return out
