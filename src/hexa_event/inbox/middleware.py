"""The inbox: a handler's effects and its dedup record committed in one transaction.

    inbox = Inbox(engine)                       # an AsyncEngine or a database URL

    @receiver.subscribe("orders", payload=Order, action="billing.charge")
    @inbox.idempotent
    async def charge(ctx, msg, session):        # session: AsyncSession, transaction open
        session.add(Charge(...))                # effects...
        await outbox.emit_async(session, Event(...), ctx)   # ...and events to emit

``idempotent`` opens a transaction, inserts (event id, action) into ``hexa_inbox`` and runs
the handler in that transaction, then commits both. If the pair is already there the event
was handled before: the handler is not run and the delivery is acked. If the handler raises,
everything rolls back (the dedup row too) and the exception nacks the delivery as usual.

The dedup row is inserted *first*, so on PostgreSQL a concurrent duplicate blocks on it
until the first transaction ends, and then skips (it never runs the effects twice at once).
"""

from __future__ import annotations

import contextvars
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from .._sql.clock import utcnow
from .._sql.dialects import insert_ignoring_duplicates
from .._sql.engine import GOODBYE_WAIT, dispose_within, engine_for
from .._sql.names import check_table_dialect
from ..context import Context
from ..event import Message
from ..middleware import Handler, Middleware
from .store import dedup_key, fit_key, resolve_table

log = logging.getLogger(__name__)

T = TypeVar("T")
TransactionalHandler = Callable[[Context, Message[Any], AsyncSession], Awaitable[None]]

_current: contextvars.ContextVar[AsyncSession | None] = contextvars.ContextVar(
    "hexa_inbox_session", default=None
)


def current_session() -> AsyncSession:
    """The session of the inbox transaction the calling handler runs in.

    For handlers wrapped by :meth:`Inbox.middleware`; raises RuntimeError elsewhere.
    """
    session = _current.get()
    if session is None:
        raise RuntimeError(
            "no inbox transaction here: add inbox.middleware() to the receiver or "
            "subscription, or use @inbox.idempotent to receive the session as an argument"
        )
    return session


class Inbox:
    """Idempotent handling backed by ``hexa_inbox`` (PostgreSQL, SQLite, MySQL/MariaDB).

    ``db`` is an ``AsyncEngine`` (the caller's, which it keeps) or a URL. ``session_factory``
    makes the sessions handlers receive (default: ``async_sessionmaker(engine,
    expire_on_commit=False)``); give yours to share ORM settings. ``schema`` (PostgreSQL)
    and ``table_prefix`` pick the inbox table (:func:`~hexa_event.inbox.table_for`), so
    services sharing a database keep separate dedup records.
    """

    def __init__(
        self,
        db: str | AsyncEngine,
        *,
        session_factory: async_sessionmaker[AsyncSession] | None = None,
        schema: str | None = None,
        table_prefix: str = "",
        table: Table | None = None,
    ) -> None:
        table = resolve_table(table, schema, table_prefix, owner="Inbox")
        self.engine, self._owns_engine = engine_for(db)
        check_table_dialect(table, self.engine.dialect.name, owner="Inbox")
        self.table = table
        self.sessions = session_factory or async_sessionmaker(self.engine, expire_on_commit=False)
        self._insert = insert_ignoring_duplicates(self.table, self.engine.dialect.name)
        # Where the columns' length is enforced, a longer id (a foreign producer's) is
        # stored hashed; SQLite keeps it whole, as it always did.
        self._fit = self.engine.dialect.name != "sqlite"

    def _key(self, ctx: Context) -> tuple[str, str]:
        event_id, action = dedup_key(ctx)
        return (fit_key(event_id), fit_key(action)) if self._fit else (event_id, action)

    async def run(
        self,
        ctx: Context,
        effects: Callable[[AsyncSession], Awaitable[T]],
    ) -> tuple[bool, T | None]:
        """Run ``effects`` once per dedup key of ``ctx``, committed with the dedup row.

        Returns ``(True, result)`` when the effects ran and committed, ``(False, None)`` when
        the key was already recorded (nothing ran). Exceptions from ``effects`` roll both
        back and propagate.
        """
        event_id, action = self._key(ctx)
        async with self.sessions() as session, session.begin():
            result = await session.execute(
                self._insert,
                {"event_id": event_id, "action": action, "processed_at": utcnow()},
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                log.info(
                    "inbox: skipping duplicate event_id=%s action=%s (already handled)",
                    event_id,
                    action,
                )
                return False, None
            return True, await effects(session)

    async def seen(self, ctx: Context) -> bool:
        """Whether the dedup key of ``ctx`` is recorded (its effects were committed)."""
        event_id, action = self._key(ctx)
        t = self.table
        stmt = select(t.c.event_id).where(t.c.event_id == event_id, t.c.action == action)
        async with self.engine.connect() as conn:
            return (await conn.execute(stmt)).first() is not None

    def idempotent(self, handler: TransactionalHandler) -> Handler:
        """Wrap ``async handler(ctx, msg, session)`` into an ``(ctx, msg)`` handler.

        The session's transaction is open and holds the new dedup row; it commits when the
        handler returns. Duplicates return without calling the handler (the core acks).
        """

        @functools.wraps(handler)
        async def once(ctx: Context, msg: Message[Any]) -> None:
            async def effects(session: AsyncSession) -> None:
                await handler(ctx, msg, session)

            await self.run(ctx, effects)

        return once

    def middleware(self) -> Middleware:
        """A middleware giving every handler it wraps the same guarantee as :meth:`idempotent`.

        Handlers take the usual ``(ctx, msg)`` and reach the transaction through
        :func:`current_session`.
        """

        def wrap(handler: Handler) -> Handler:
            @functools.wraps(handler)
            async def once(ctx: Context, msg: Message[Any]) -> None:
                async def effects(session: AsyncSession) -> None:
                    token = _current.set(session)
                    try:
                        await handler(ctx, msg)
                    finally:
                        _current.reset(token)

                await self.run(ctx, effects)

            return once

        return wrap

    async def close(self) -> None:
        """Release the engine if the inbox created it. Idempotent. Returns within
        ``GOODBYE_WAIT`` (5 s) even when the database does not answer: its connections are
        then dropped unclosed, and an ERROR says so."""
        if self._owns_engine and not await dispose_within(self.engine, GOODBYE_WAIT):
            log.error(
                "inbox: close() dropped the engine's connections unclosed: the database did "
                "not answer within %.0fs",
                GOODBYE_WAIT,
            )

    async def __aenter__(self) -> Inbox:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
