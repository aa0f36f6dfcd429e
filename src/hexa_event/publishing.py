"""The publish pipeline: every record the library publishes for you, and why.

An emitter's events and a receiver's retry copies and dead letters reach the driver through
one pipeline of publish middlewares, the record-level counterpart of emit and handler
middlewares: ``PublishMiddleware = (next) -> publish``, where ``publish(publication)`` sends
``publication.records`` and returns once the broker has them. A middleware may read the
records and why they are sent (:class:`Publication`), time the call, observe its failure, or
pass other records on (add a header, say).

Copies reach the pipeline as the core built them, byte for byte (a Go service reads the same
retry chain and dead letters): a middleware that passes changed records on changes what is
published, so most only look.

Purposes (:attr:`Publication.purpose`):

- ``"emit"``: an emitter's events (``emit``, ``emit_many``, ``request``, ``reply``);
- ``"retry"``: a failed handler run's copy to ``<base>.retry.N``; a retry in place
  (``RetryPolicy(in_place=True)``) passes too, with no records, as nothing is sent;
- ``"dead-letter"``: a dead letter to ``<base>.dlq``.

When a retry or dead-letter publication raises (the broker refused, or a middleware
raised), the delivery is given back (nacked with a growing back-off) and comes back later,
so nothing is lost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .driver import RawRecord
from .event import Message

Purpose = Literal["emit", "retry", "dead-letter"]

Publish = Callable[[Sequence[RawRecord]], Awaitable[None]]
"""A driver's ``publish``: the bottom of the pipeline."""


@dataclass(frozen=True, slots=True)
class Publication:
    """One publish call through the pipeline: the records and why they are sent."""

    records: Sequence[RawRecord]
    purpose: Purpose = "emit"
    action: str = ""
    """The subscription (handler action) a retry copy or dead letter is about."""
    reason: str = ""
    """A retry: the error's type name; a dead letter: ``poison``, ``permanent-error`` or
    ``retries-exhausted`` (its ``HEXA_DEAD_LETTER_REASON``)."""
    error: BaseException | None = None
    """What the handler raised (or why the record is poison)."""
    message: Message[Any] | None = None
    """The failed handler run's message, the very object the handler (and its middlewares)
    got; None for emits and for poison records, which no handler saw."""


PublishCall = Callable[[Publication], Awaitable[None]]
"""Send ``publication.records``; return once the broker has them, raise otherwise."""
PublishMiddleware = Callable[[PublishCall], PublishCall]


def pipeline(publish: Publish, middlewares: Sequence[PublishMiddleware] = ()) -> PublishCall:
    """``publish`` wrapped so the first middleware listed runs first; a publication with no
    records (a retry in place) reaches the middlewares but not the driver."""

    async def bottom(publication: Publication) -> None:
        if publication.records:
            await publish(publication.records)

    call: PublishCall = bottom
    for middleware in reversed(tuple(middlewares)):
        call = middleware(call)
    return call
