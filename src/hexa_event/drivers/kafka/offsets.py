"""Per-partition offset bookkeeping: the commit is the lowest unfinished offset, and the
acks above it travel in the commit metadata, ``hexa1:<start>+<length>,...`` (starts relative
to the committed offset, at most ``MAX_METADATA`` characters; anything else means nothing
acked above). Design: docs/engines/kafka.md, section "Internals".
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import groupby, repeat, starmap

PREFIX = "hexa1:"
MAX_METADATA = 3000


def encode_acked(base: int, acked: Iterable[int]) -> str:
    """The metadata for committed offset ``base`` and acked offsets above it."""
    runs: list[str] = []
    size = len(PREFIX)
    above = enumerate(sorted({o for o in acked if o > base}))
    for _, run in groupby(above, lambda pair: pair[1] - pair[0]):  # consecutive offsets
        offsets = [o for _, o in run]
        text = f"{offsets[0] - base}+{len(offsets)}"
        size += len(text) + 1
        if size > MAX_METADATA:
            break  # the rest is delivered again (at-least-once)
        runs.append(text)
    return PREFIX + ",".join(runs) if runs else ""


def decode_acked(base: int, metadata: str | None) -> set[int]:
    """The acked offsets above ``base`` recorded in ``metadata`` (empty when not ours)."""
    if not metadata or not metadata.startswith(PREFIX) or base < 0:
        return set()
    acked: set[int] = set()
    try:
        for run in metadata[len(PREFIX) :].split(","):
            if not run:
                continue
            start_text, _, length_text = run.partition("+")
            start, length = int(start_text), int(length_text)
            if start < 1 or length < 1 or length > 1_000_000:
                return set()
            acked.update(range(base + start, base + start + length))
    except ValueError:
        return set()
    return acked


@dataclass(eq=False, slots=True)
class PartitionState:
    """Loop-owned state of one assigned partition (a new object per assignment): ``offsets``
    received and not finished (plus finished ones behind an unfinished head), ascending;
    ``done`` the finished ones not at the head; ``skip`` offsets acked above the committed
    one by another member (commit metadata), finished as they arrive."""

    key: tuple[str, int]
    member: object
    """The group member (consumer) that holds this partition."""
    committed: int = -1
    skip: set[int] = field(default_factory=set)
    committed_metadata: str = ""
    offsets: deque[int] = field(default_factory=deque)
    done: set[int] = field(default_factory=set)
    next_offset: int = field(init=False)
    """Highest offset received + 1 (the committed offset before anything arrived)."""
    outstanding: int = 0
    """Deliveries of this partition handed out and not settled."""
    revoking: bool = False

    def __post_init__(self) -> None:
        self.next_offset = self.committed

    def complete(self, offset: int) -> None:
        """Mark ``offset`` finished (acked)."""
        offsets = self.offsets
        if offsets and offsets[0] == offset:
            offsets.popleft()
            done = self.done
            while offsets and offsets[0] in done:
                done.discard(offsets.popleft())
        else:
            self.done.add(offset)

    def complete_all(self, acked: list[int]) -> None:
        """Mark the ``acked`` offsets finished (unfinished ones, in any order; sorts the list).

        The common case, a batch that acked the oldest received offsets of the partition,
        drops that run from the head at once; anything else goes offset by offset."""
        if not acked:
            return
        acked.sort()
        offsets = self.offsets
        count = len(acked)
        if (
            count <= len(offsets)
            and offsets[0] == acked[0]
            and offsets[count - 1] == acked[-1]  # n distinct ones in n places: exactly those
        ):
            popleft = offsets.popleft
            if count == len(offsets):
                offsets.clear()
            else:  # popped by a C loop
                deque(starmap(popleft, repeat((), count)), maxlen=0)
            done = self.done
            while offsets and offsets[0] in done:
                done.discard(popleft())
            return
        for offset in acked:
            self.complete(offset)

    def inherit(self, earlier: PartitionState) -> bool:
        """Keep what ``earlier`` settled that this assignment's committed offset does not
        cover (``earlier``: this partition's state under a member of this process that lost
        it, or was replaced, before its commits got through). Every offset below its
        watermark is finished, so this state starts there; the offsets it acked above are
        skipped as they arrive. True when that moved anything (a commit is due)."""
        mark = earlier.watermark()
        moved = mark > self.next_offset
        if moved:
            self.next_offset = mark
        floor = self.next_offset
        acked = {o for o in (*earlier.done, *earlier.skip) if o >= floor} - self.skip
        self.skip.update(acked)
        return moved or bool(acked)

    def watermark(self) -> int:
        """The offset to commit: the lowest unfinished one, else highest received + 1."""
        return self.offsets[0] if self.offsets else self.next_offset

    def position(self) -> tuple[int, str] | None:
        """(offset, metadata) to commit, or None when nothing changed since the last commit."""
        mark = self.watermark()
        if mark < 0:
            return None
        metadata = encode_acked(mark, (*self.done, *self.skip))
        if mark == self.committed and metadata == self.committed_metadata:
            return None
        return mark, metadata
