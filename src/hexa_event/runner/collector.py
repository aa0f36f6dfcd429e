"""The garbage collector while a service runs (``hexa-event run``; on by default,
``--no-gc-tuning`` or ``gc_tuning=False`` leaves it alone).

Once every receiver has started, :func:`tune` collects once, then freezes what the process
holds (``gc.freeze()``: the modules, drivers, receivers and their caches move to the
permanent generation, out of the collector's walk, as Instagram does in its web servers),
and raises the young generation's threshold from CPython's 700 to :data:`YOUNG_THRESHOLD`.

Why (docs/deploy.md, "The garbage collector"): the objects a receiver allocates per event
live until the event is settled, so with the default threshold every young collection walks
the events in flight, and the older generations walk them again. Above what a receiver holds
in flight, young collections become rare (objects freed by reference counting lower the
count the threshold is compared with).

Memory does not grow: only cyclic garbage waits longer (until that many objects accumulate),
and what the freeze keeps is cyclic garbage of the startup heap. A library must not change
such process-wide settings by itself: only the runner, which owns the process, does, and
:func:`restore` undoes both when the service stops. A process that set its own thresholds
keeps them.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLDS = (700, 10, 10)
"""CPython's own thresholds: any others were set by the process, which keeps them."""
YOUNG_THRESHOLD = 50_000
"""The young generation's threshold while serving (above what a receiver holds in flight)."""


@dataclass(frozen=True)
class Tuning:
    """What :func:`tune` changed, for :func:`restore`."""

    thresholds: tuple[int, int, int] | None
    """The thresholds before (None: left as they were)."""


def tune() -> Tuning | None:
    """Collect once, freeze the heap, raise the young threshold (unless the process set its
    own). None (nothing done) when the collector is disabled or objects are frozen already:
    the process manages the collector itself."""
    if not gc.isenabled() or gc.get_freeze_count():
        return None
    gc.collect()
    gc.freeze()
    before = gc.get_threshold()
    raised = before == DEFAULT_THRESHOLDS
    if raised:
        gc.set_threshold(YOUNG_THRESHOLD, *before[1:])
    logger.debug(
        "garbage collector: %d objects frozen, thresholds %s",
        gc.get_freeze_count(),
        gc.get_threshold(),
    )
    return Tuning(before if raised else None)


def restore(tuned: Tuning | None) -> None:
    """Undo :func:`tune` (``tuned`` is what it returned): the frozen objects go back to the
    oldest generation, the thresholds to what they were."""
    if tuned is None:
        return
    gc.unfreeze()
    before = tuned.thresholds
    if before is not None and gc.get_threshold() == (YOUNG_THRESHOLD, *before[1:]):
        gc.set_threshold(*before)  # (thresholds the process set meanwhile are kept)
