"""Transactional outbox: emit inside your own database transaction, relay to any driver.

- :class:`Outbox` writes sealed events into ``hexa_outbox`` in the caller's transaction
  (``emit`` for sync ``Session``/``Connection``, ``await emit_async`` for asyncio ones).
- :class:`OutboxRelay` publishes unsent rows to a driver (at least once, per-key order,
  several relays at once, no late-commit gap) and reports its backlog.
  A row the target refuses for good (over its size limit, a channel it cannot carry) is
  parked with the reason in ``last_error`` and the relay goes on; :func:`requeue_parked`
  puts parked rows back once the cause is fixed.
- Sent rows leave the table; each relayed batch leaves one line in the sent log
  (:func:`sent_table`: ``hexa_outbox_sent``, when, how many, which event ids).
- :class:`OutboxCleaner` deletes what was sent longer ago than a retention period.
- :func:`migrate` / :func:`migrate_async` create the tables; :func:`ddl` shows their DDL.
- Each takes ``schema`` (PostgreSQL) and ``table_prefix``: :func:`table_for` gives that
  outbox table (``billing.hexa_outbox``, ``billing_hexa_outbox``), so several services
  share one database; :data:`outbox_table` is the default one.

Also runnable from the command line: ``hexa-event outbox {migrate,ddl,relay,clean,stats}``.
"""

from ..errors import require_extra

try:  # the [sql] extra: without it, say which extra to install
    from .cleaner import OutboxCleaner
    from .relay import OutboxRelay
    from .requeue import requeue_parked
    from .stats import OutboxStats, outbox_stats
    from .store import (
        Outbox,
        ddl,
        metadata,
        migrate,
        migrate_async,
        notify_channel,
        outbox_table,
        sent_table,
        table_for,
    )
except ModuleNotFoundError as _missing:
    raise require_extra("hexa_event.outbox", _missing) from None

__all__ = [
    "Outbox",
    "OutboxCleaner",
    "OutboxRelay",
    "OutboxStats",
    "ddl",
    "metadata",
    "migrate",
    "migrate_async",
    "notify_channel",
    "outbox_stats",
    "outbox_table",
    "requeue_parked",
    "sent_table",
    "table_for",
]
