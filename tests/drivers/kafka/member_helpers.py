"""A Kafka group member for unit tests: no broker is contacted until it is started."""

from __future__ import annotations

import asyncio
from typing import Any

from hexa_event.drivers.kafka.member import Member


def new_member(loop: asyncio.AbstractEventLoop, owner: Any = None) -> Member:
    """A member of group ``g`` on topic ``t`` (``owner``: its subscription, or a stand-in)."""
    return Member(
        owner or object(),
        loop,
        group="g",
        topics=["t"],
        config={"group.id": "g"},
        eager=False,
        revoke_timeout=1.0,
        scrub=str,
    )
