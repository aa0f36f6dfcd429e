"""Event identifiers: UUIDv7 strings, time-ordered, assigned by the producer.

An id is the canonical 36-character text of a UUIDv7 (RFC 9562): the millisecond of the
clock in the top 48 bits, version 7, variant ``10``, and 74 bits that start at a random value
in each new millisecond (from the operating system's random source) and count up by one for
each further id in it (the RFC's "monotonic random" method). So ids are unique (73 random
bits a millisecond, per process and thread that starts one), increasing within a thread, and
cost a counter step and a string concatenation instead of a UUID object formatted per id: the
text of all but the last byte is made once per 256 ids.
"""

from __future__ import annotations

import itertools
import os
import secrets
import time

_HEX2 = tuple(f"{n:02x}" for n in range(256))
_MS = (1 << 48) - 1
_RAND_B = (1 << 62) - 1
_SPENT = 1 << 74
"""The 74 bits counted past their end (2**73 ids in a millisecond): move to the next one."""


def _prefix(ms: int, high: int) -> str:
    """The text of the UUIDv7 of millisecond ``ms`` whose 74 counted bits are ``high`` with a
    last byte appended, without that last byte's two hex digits (34 characters)."""
    bits = high << 8
    value = (ms & _MS) << 80 | 0x7 << 76 | (bits >> 62) << 64 | 0b10 << 62 | (bits & _RAND_B)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:30]}"


class EventIds:
    """Makes event ids for given milliseconds; :meth:`next` is safe to call from several
    threads (``next`` of one :func:`itertools.count` is atomic, and each state is one
    tuple)."""

    __slots__ = ("_state",)

    def __init__(self) -> None:
        self._state: tuple[int, itertools.count[int], int, str] = (-1, itertools.count(), -1, "")

    def reset(self) -> None:
        """Start over from a fresh random value (a forked child must not repeat its
        parent's ids)."""
        self._state = (-1, itertools.count(), -1, "")

    def next(self, ms: int) -> str:
        """The id of an event emitted at epoch millisecond ``ms``; a clock that went back
        keeps counting in the latest millisecond seen, so ids keep increasing."""
        state = self._state
        if ms > state[0]:
            state = self._state = (ms, itertools.count(secrets.randbits(73)), -1, "")
        counted = next(state[1])
        high = counted >> 8
        if high != state[2]:
            if counted >= _SPENT:
                self._state = (state[0] + 1, itertools.count(secrets.randbits(73)), -1, "")
                return self.next(state[0] + 1)
            state = self._state = (state[0], state[1], high, _prefix(state[0], high))
        return state[3] + _HEX2[counted & 0xFF]


_IDS = EventIds()
next_event_id = _IDS.next
"""``next_event_id(ms)``: the id of an event emitted at epoch millisecond ``ms`` (the sealer
reads the clock once for the id and the ``HEXA_EVENT_TIME`` header)."""
os.register_at_fork(after_in_child=_IDS.reset)


def new_event_id() -> str:
    """A new UUIDv7 as its canonical 36-character string."""
    return next_event_id(time.time_ns() // 1_000_000)
