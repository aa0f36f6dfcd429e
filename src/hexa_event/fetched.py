"""Record batches of a single handler's subscription, out in its lanes.

On a driver with ``fetch_records`` (Kafka), the receiver fetches a single handler's records
as one :class:`~hexa_event.driver.RecordBatch` and hands each record to its key's lane as an
item ``(Fetched, index, ctx, message)``, read by ``Dispatcher.first_records``: no delivery
object per record, and one settlement per batch (the driver writes it as ranges). A record
the first pass does not read, or whose handler fails, is taken out of the batch
(:meth:`Fetched.take`) and settled as a delivery of its own, the careful way. The batch is
acked once every record left in it was handled.

A batch does not wait for one slow record: a second after its fetch, the receiver
releases it (:meth:`Fetched.release`). Its unfinished records are taken out as deliveries,
kept in ``out`` while their items stay in the lanes, and the batch is acked for the others.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .batching import Books
from .context import Context
from .driver import Delivery, RecordBatch
from .event import Message


class Fetched:
    """One fetched record batch while its records are in the lanes: ``left`` of them are
    not finished (neither handled nor taken out)."""

    __slots__ = ("batch", "books", "left", "out", "timer")

    def __init__(self, batch: RecordBatch, books: Books) -> None:
        self.batch = batch
        self.books = books
        self.left = len(batch)
        self.out: dict[int, Delivery] = {}
        """Records released (:meth:`release`) whose items have not run to the end yet."""
        self.timer: asyncio.TimerHandle | None = None
        """The receiver's call to release the batch, cancelled once it is settled (so that
        the loop's timers do not keep the batch's records alive)."""

    def take(self, index: int) -> Delivery:
        """Record ``index``, not finished, taken out as a delivery of its own (unsettled
        from now on): the batch's ack no longer covers it."""
        delivery = self.batch.take(index)
        self.books.unsettled[delivery] = time.monotonic()
        self.done()
        return delivery

    def delivery(self, index: int) -> Delivery:
        """Record ``index``, not finished, as a delivery: the one it was released as, or
        taken out now."""
        released = self.out.pop(index, None)
        return released if released is not None else self.take(index)

    def release(self, indexes: list[int]) -> None:
        """Take the unfinished records ``indexes`` out, each kept in ``out`` until its item
        runs (and settles it as a delivery): the batch is acked for the rest at once."""
        for index in indexes:
            self.out[index] = self.take(index)

    def done(self) -> None:
        """One record finished (handled, or taken out): once all are, :meth:`finish`."""
        self.left -= 1
        if not self.left:
            self.finish()

    def finish(self) -> None:
        """Every record finished: the batch is acked and goes to the settle loop (unless
        close gave it back already, and settles it)."""
        batch = self.batch
        if batch.outcome is not None:
            return
        batch.ack()
        if self.timer is not None:
            self.timer.cancel()
        books = self.books
        books.pending_records.append(batch)
        books.settle_wake.set()

    def restart(self) -> None:
        """The batch's stall clock starts now: a record of it waited behind its key's head
        (held until due, or backing off for an in-place retry), which does not stall it."""
        records = self.books.records
        if records.pop(self.batch, None) is not None:
            records[self.batch] = time.monotonic()

    def give_back(self, indexes: list[int]) -> list[Delivery]:
        """At close: the unfinished records (``indexes``, all of them) are given back. A
        batch none of whose records was handled is nacked whole; otherwise those are taken
        out and nacked (returned: settle them) and the batch is acked for the handled ones.
        The batch goes to the settle loop either way."""
        batch = self.batch
        given = [delivery for delivery in self.out.values() if delivery.outcome is None]
        for delivery in given:
            delivery.nack()
        self.out.clear()
        if batch.outcome is not None:
            return given
        handled = len(batch) - len(batch.taken) - self.left
        if handled:
            for index in indexes:
                if index in batch.taken:  # released: given back above
                    continue
                delivery = batch.take(index)
                delivery.nack()
                given.append(delivery)
            batch.ack()
        else:
            batch.nack()
        self.left = 0
        if self.timer is not None:
            self.timer.cancel()
        self.books.pending_records.append(batch)
        return given


RecordItem = tuple[Fetched, int, Context, Message[Any]]
"""A record in a lane: its batch, its index there, and what the handler is given."""
