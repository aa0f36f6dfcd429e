"""Publishing a claimed batch to the driver, and what a failed publish says of each row.

Rows of one key stay in one ``driver.publish`` call, in id order; up to ``concurrency``
calls (disjoint keys) run at once, so a failure affects only its keys. A row the driver
refuses for good is parked, rows it says were stored are done, rows known not sent are sent
again at once, the rest failed (retried after the relay's ``retry_delay``).
"""

from __future__ import annotations

import asyncio
import time
from itertools import compress

import msgspec

from .._sql.problems import brief
from ..driver import Driver, RawRecord
from ..envelope import DELIVER_AT
from ..errors import InvalidEventError, NotStoredError, PartialPublishError
from ..event import MAX_SCHEDULE
from .claims import Claimed, Published


def outcome(
    exc: BaseException, count: int
) -> tuple[list[int], dict[int, str], list[int], list[int]]:
    """What a failed ``publish`` of ``count`` records says of each (indexes): stored,
    refused for good (with why), known not sent (may be sent again at once), unknown."""
    if isinstance(exc, PartialPublishError):
        stored = sorted(exc.stored)
        parked = {
            i: brief(e)
            for i, e in exc.failed.items()
            if isinstance(e, NotStoredError) and not e.retriable
        }
        unsent = sorted(
            i for i, e in exc.failed.items() if isinstance(e, NotStoredError) and e.retriable
        )
        unknown = sorted(i for i in exc.failed if i not in parked and i not in unsent)
        return stored, parked, unsent, unknown
    if count == 1 and refused_for_good(exc):
        return [], {0: brief(exc)}, [], []
    if count > 1 and isinstance(exc, InvalidEventError):
        # Refused before sending, and which record is not said: send them one at a time.
        return [], {}, list(range(count)), []
    return [], {}, [], list(range(count))


def refused_for_good(exc: BaseException) -> bool:
    """A refusal that sending again cannot overcome, and nothing stored."""
    if isinstance(exc, NotStoredError):
        return not exc.retriable
    return isinstance(exc, InvalidEventError)


def with_due_times(records: list[RawRecord]) -> list[RawRecord]:
    """``records``, a scheduled event's (``HEXA_DELIVER_AT``, epoch ms) with its due time as
    ``not_before``: the emitter does so for a broker that holds a record until due
    (``features.scheduled_publish``), and so does the relay. A due time that is not a
    number is left to the consumer (which refuses it); one further than the longest
    schedule is held that long (the consumer waits no longer either)."""
    latest = time.time() + MAX_SCHEDULE
    for n, record in enumerate(records):
        raw = record.headers.get(DELIVER_AT)
        if raw is not None and raw.isdigit() and len(raw) <= 18:  # ASCII digits only
            due = min(int(raw) / 1000, latest)
            records[n] = msgspec.structs.replace(record, not_before=due)
    return records


async def publish_batch(driver: Driver, batch: Claimed, concurrency: int) -> Published:
    """Publish a batch: the ids published, parked (refused for good) and failed.

    Rows of one key stay in one ``driver.publish`` call, in id order; up to
    ``concurrency`` calls (disjoint keys) run at once, so a failure affects only its keys.
    """
    n = concurrency
    # A row whose stored headers do not decode cannot be sent: parked, not the batch.
    ids, keys, records, unreadable = batch.readable()
    if driver.features.scheduled_publish:
        records = with_due_times(records)
    parts: list[tuple[list[int], list[RawRecord]]]
    if n == 1 or len(ids) < 2 * n:
        parts = [(ids, records)]
    else:
        # Each row's part, then each part's rows, by map/compress: no Python code per
        # row. hash(): stable within the process, which is all a batch's split needs.
        part_of = list(map(n.__rmod__, map(hash, keys)))
        parts = []
        for index in range(n):
            chosen = list(map(index.__eq__, part_of))
            part_ids = list(compress(ids, chosen))
            if part_ids:
                parts.append((part_ids, list(compress(records, chosen))))
    results = await asyncio.gather(*(publish_part(driver, ids, records) for ids, records in parts))
    total = Published(parked=unreadable)
    for part in results:
        total.done += part.done
        total.parked.update(part.parked)
        total.failed += part.failed
        total.error = total.error or part.error
    return total


async def publish_part(driver: Driver, ids: list[int], records: list[RawRecord]) -> Published:
    """One ``driver.publish`` call, and its outcome per row: a row the driver refused
    for good (:class:`~hexa_event.errors.NotStoredError`, not retriable) is parked, rows
    it says were stored are done, and rows known not sent are sent again at once."""
    out = Published()
    while ids:
        try:
            await driver.publish(records)
        except Exception as exc:
            stored, parked, unsent, unknown = outcome(exc, len(ids))
            out.done += [ids[i] for i in stored]
            out.parked.update((ids[i], why) for i, why in parked.items())
            if len(unsent) == len(ids) > 1:
                # Refused before sending, the culprit not named: one at a time.
                return await one_by_one(driver, ids, records)
            if parked and not unknown and len(unsent) < len(ids):
                ids = [ids[i] for i in unsent]  # a refused row is out: the rest again
                records = [records[i] for i in unsent]
                continue
            out.failed += [ids[i] for i in sorted([*unsent, *unknown])]
            out.error = exc
            return out
        out.done += ids
        return out
    return out


async def one_by_one(driver: Driver, ids: list[int], records: list[RawRecord]) -> Published:
    """Publish rows singly, in order; a row that fails holds back its key's later rows."""
    out = Published()
    held: set[str] = set()
    for row_id, record in zip(ids, records, strict=True):
        if record.key in held:
            out.failed.append(row_id)
            continue
        part = await publish_part(driver, [row_id], [record])
        out.done += part.done
        out.parked.update(part.parked)
        if part.failed:
            held.add(record.key)
            out.failed += part.failed
            out.error = out.error or part.error
    return out
