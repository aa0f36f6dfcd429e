"""A stand-in for a Kafka consumer-group member: what a ``KafkaSubscription`` asks of one,
with no broker, for tests of the driver's receive path. It records the errors reported to
it (or, ``strict``, fails the test on one) and the commits asked of it."""

from __future__ import annotations

import asyncio
from typing import Any


class Room:
    """The member's "room to fetch" flag (an ``asyncio.Event`` without the waiting)."""

    def __init__(self) -> None:
        self.set_ = True

    def clear(self) -> None:
        self.set_ = False

    def set(self) -> None:
        self.set_ = True

    def is_set(self) -> bool:
        return self.set_


class StubMember:
    abandoned = False
    lag = None
    last_error = None
    replacing = None

    def __init__(self, *, strict: bool = False) -> None:
        self.room = Room()
        self.strict = strict
        self.errors: list[Any] = []
        self.commits: list[list[tuple[str, int, int, str]]] = []
        self.assigned_once = asyncio.Event()
        self.assigned_once.set()

    def on_error(self, error: Any) -> None:
        if self.strict:
            raise AssertionError(error)
        self.errors.append(error)

    def clear_error(self) -> None:
        pass

    async def commit(self, positions: list[tuple[str, int, int, str]]) -> None:
        self.commits.append(positions)

    def problem(self, margin: float) -> str | None:
        del margin
        return None
