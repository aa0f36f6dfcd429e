"""Inbox (idempotent consumer): a handler's effects and its dedup record in one transaction.

Keyed by (``HEXA_ROOT_EVENT_ID`` or ``HEXA_EVENT_ID``, root action or action): a redelivered
or re-sent event is acked without running the handler's effects again. With the outbox in
the same transaction this gives exactly-once effects for consume -> write -> emit.

``schema`` (PostgreSQL) and ``table_prefix`` on :class:`Inbox`, :class:`InboxCleaner`,
:func:`migrate` and :func:`ddl` pick the table (:func:`table_for`), so services sharing a
database keep their dedup records apart.
"""

from ..errors import require_extra

try:  # the [sql] extra: without it, say which extra to install
    from .cleaner import InboxCleaner
    from .middleware import Inbox, TransactionalHandler, current_session
    from .store import ddl, dedup_key, inbox_table, metadata, migrate, migrate_async, table_for
except ModuleNotFoundError as _missing:
    raise require_extra("hexa_event.inbox", _missing) from None

__all__ = [
    "Inbox",
    "InboxCleaner",
    "TransactionalHandler",
    "current_session",
    "ddl",
    "dedup_key",
    "inbox_table",
    "metadata",
    "migrate",
    "migrate_async",
    "table_for",
]
