"""hexa-event in a FastAPI app: receiver and outbox relay in the lifespan, the emitter as a
dependency, the outbox in the request's transaction, telemetry on.

    pip install 'hexa-event[sql,otel]' fastapi uvicorn
    uvicorn fastapi_app:app --app-dir examples --port 8000
    curl -X POST localhost:8000/orders -H 'content-type: application/json' \
         -d '{"customer": "ada", "total_cents": 4200}'
    curl localhost:8000/handled

``APP_DB`` is the app's own database (orders and the outbox table, SQLAlchemy async URL);
``EVENTS_URL`` is the engine events travel on (``kafka://...`` in production; the embedded
SQLite log by default). See docs/fastapi.md.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

import hexa_event as he
from hexa_event.outbox import Outbox, OutboxRelay, migrate_async
from hexa_event.telemetry import Telemetry

APP_DB = os.environ.get("APP_DB", "sqlite+aiosqlite:///data/fastapi-app.db")
EVENTS_URL = os.environ.get("EVENTS_URL", "sqlite:///data/fastapi-events.db")

metadata = sa.MetaData()
orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("customer", sa.String(100), nullable=False),
    sa.Column("total_cents", sa.Integer, nullable=False),
)


@dataclass
class OrderPlaced:
    order_id: str
    customer: str
    total_cents: int


class NewOrder(BaseModel):
    customer: str
    total_cents: int


outbox = Outbox()
shipped: list[str] = []
"""Order ids the receiver handled (GET /handled shows them)."""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    telemetry = Telemetry()  # the global OpenTelemetry providers; set yours up before
    engine = create_async_engine(APP_DB)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    await migrate_async(engine)  # the outbox table

    events = telemetry.instrument(he.connect(EVENTS_URL))
    receiver = events.receiver("shipping", drain_timeout=20)

    @receiver.subscribe("orders", payload=OrderPlaced, action="shipping.prepare")
    async def prepare(ctx: he.Context, msg: he.Message[OrderPlaced]) -> None:
        shipped.append(msg.payload.order_id)

    relay = OutboxRelay(engine, telemetry.relay_driver(events), poll_interval=0.2)
    app.state.engine = engine
    app.state.emitter = events.emitter()
    app.state.receiver = receiver
    async with receiver:  # start; on shutdown drain, settle, leave the group
        relaying = asyncio.create_task(relay.run())
        try:
            yield
        finally:
            relay.stop()  # finishes the batch in flight
            await relaying
            await relay.close()
    await events.close()
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


def get_emitter(request: Request) -> he.Emitter:
    return request.app.state.emitter  # type: ignore[no-any-return]


def get_engine(request: Request) -> AsyncEngine:
    return request.app.state.engine  # type: ignore[no-any-return]


def request_context(request: Request) -> he.Context:
    """The event context of a request: its correlation id travels with every event."""
    return he.Context(correlation_id=request.headers.get("x-request-id") or str(uuid.uuid4()))


Emitter = Annotated[he.Emitter, Depends(get_emitter)]
Engine = Annotated[AsyncEngine, Depends(get_engine)]
EventContext = Annotated[he.Context, Depends(request_context)]


@app.post("/orders")
async def place_order(order: NewOrder, engine: Engine, ctx: EventContext) -> dict[str, Any]:
    """The order row and its event commit together, or neither does (the outbox)."""
    order_id = str(uuid.uuid4())
    async with AsyncSession(engine) as session, session.begin():
        await session.execute(orders.insert().values(id=order_id, **order.model_dump()))
        event = he.Event(
            channel="orders",
            key=order_id,
            payload=OrderPlaced(order_id, order.customer, order.total_cents),
        )
        event_id = await outbox.emit_async(session, event, ctx)
    return {"order_id": order_id, "event_id": event_id}


@app.post("/pings")
async def ping(emitter: Emitter, ctx: EventContext) -> dict[str, str]:
    """No database write to pair with: emit directly (returns once the engine has it)."""
    event_id = await emitter.emit(he.Event(channel="pings", key="ping", payload={"ok": True}), ctx)
    return {"event_id": event_id}


@app.get("/handled")
async def handled() -> dict[str, list[str]]:
    return {"orders": shipped}


@app.get("/health")
async def health(request: Request) -> dict[str, Any]:
    return request.app.state.receiver.health()  # type: ignore[no-any-return]
