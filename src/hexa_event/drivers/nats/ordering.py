"""Ack-order tracking: once a record of (channel, key) is nacked, the member holds that
key's later records until it came back and was settled, or its delay plus ``ack_wait``
passed (another member got it). Retry channels are not gated (a retry copy already left
its key's order).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

log = logging.getLogger(__name__)

_AFTER = 0.05
"""Seconds a held record given back waits beyond its blocking record's delay."""


class Gated(Protocol):
    """What the gate needs of a delivery."""

    seq: int

    @property
    def gate_key(self) -> tuple[str, str]: ...


T = TypeVar("T", bound=Gated)


@dataclass(slots=True)
class _Block(Generic[T]):
    seq: int
    deadline: float
    held: list[T] = field(default_factory=list)


class KeyGate(Generic[T]):
    """Holds records of keys whose earlier record is out for redelivery."""

    def __init__(self, ack_wait: float) -> None:
        self._ack_wait = ack_wait
        self._blocks: dict[tuple[str, str], _Block[T]] = {}

    def __len__(self) -> int:
        """Records held now."""
        return sum(len(block.held) for block in self._blocks.values())

    def held(self) -> Iterator[T]:
        for block in self._blocks.values():
            yield from block.held

    def admit(self, delivery: T) -> bool:
        """True when ``delivery`` may be handed out now; otherwise the gate keeps it."""
        if not self._blocks:
            return True
        block = self._blocks.get(delivery.gate_key)
        if block is None or delivery.seq <= block.seq:
            return True
        block.held.append(delivery)
        return False

    def nacked(self, delivery: T, delay: float, now: float) -> None:
        """``delivery`` goes back to the server: block its key behind it."""
        key = delivery.gate_key
        block = self._blocks.get(key)
        deadline = now + delay + self._ack_wait
        if block is None:
            self._blocks[key] = _Block[T](delivery.seq, deadline)
        elif delivery.seq <= block.seq:
            block.seq = delivery.seq
            block.deadline = deadline

    def done(self, delivery: T) -> list[T]:
        """``delivery`` was acked or terminated: the records it held back, in order."""
        key = delivery.gate_key
        block = self._blocks.get(key)
        if block is None or block.seq != delivery.seq:
            return []
        del self._blocks[key]
        return self._release(block)

    def expire(self, now: float) -> list[T]:
        """Let go of keys whose blocking record did not come back in time."""
        released: list[T] = []
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
                released.extend(self._release(block))
        return released

    def give_back(self, now: float) -> list[tuple[T, float]]:
        """Everything held, each with what remains of its key's nack delay (a hand-over)."""
        out = [
            (d, max(0.0, block.deadline - self._ack_wait - now) + _AFTER)
            for block in self._blocks.values()
            for d in block.held
        ]
        self._blocks.clear()
        return out

    @staticmethod
    def _release(block: _Block[T]) -> list[T]:
        return sorted(block.held, key=lambda d: d.seq)
