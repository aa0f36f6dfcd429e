"""The garbage collector while a service runs (``hexa-event run``; on by default,
``--no-gc-tuning`` or ``gc_tuning=False`` leaves it alone).

Once every receiver has started, :func:`tune` collects once, then freezes what the process
holds (``gc.freeze()``: the modules, drivers, receivers and their caches move to the
permanent generation, out of the collector's walk, as Instagram does in its web servers).
The full collections CPython runs now and then while events flow (each time a quarter more
objects have reached the oldest generation) then walk only what was made since the start
instead of the whole heap: on a Kafka receiver they had cost 1.5-5 µs of the 17-25 µs per
event (docs/performance.md). Objects freed by reference counting are freed as before, and
everything made after the start is collected as before, so memory does not grow; what the
freeze keeps is only cyclic garbage that was part of the startup heap. A library must not
change such a process-wide setting by itself: only the runner, which owns the process,
does, and :func:`restore` undoes it when the service stops.
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger(__name__)


def tune() -> bool:
    """Collect once, then freeze the heap. False (nothing done) when the collector is
    disabled or objects are frozen already: the process manages the collector itself."""
    if not gc.isenabled() or gc.get_freeze_count():
        return False
    gc.collect()
    gc.freeze()
    logger.debug("garbage collector: %d objects frozen", gc.get_freeze_count())
    return True


def restore(tuned: bool) -> None:
    """Undo :func:`tune` (``tuned`` is what it returned): the frozen objects go back to the
    oldest generation."""
    if tuned:
        gc.unfreeze()
