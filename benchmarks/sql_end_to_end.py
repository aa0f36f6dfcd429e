"""End-to-end emit -> handle -> ack through the SQL driver, against a bare SQL pipeline.

For SQLite (a temporary file) and PostgreSQL (``HEXA_POSTGRES_URL``, default
``postgresql://postgres@127.0.0.1:5432/hexa_event``; skipped when it does not answer):

- ours: ``Emitter.emit_many`` in batches of 500 into the SQL log while a receiver (one
  process, ``concurrency=256``) handles and acks every event; the clock runs from the first
  emit to the last handled event.
- reference: the same SQL work without the library, on the same SQLAlchemy async engine:
  batch INSERTs of (channel, key, headers, body) into a plain table, a consumer task that
  SELECTs the next 256 rows after its position, decodes each body with msgspec and UPDATEs
  the position once per batch, woken by an asyncio event after each insert.

Published peer figure (not run here): Watermill's SQL pub/sub on PostgreSQL, 16 cores:
about 3,800 events/s publish and 455 events/s subscribe (watermill-benchmark README).

    python benchmarks/sql_end_to_end.py [--count 20000] [--rounds 3] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
from _harness import cli_parser, compare, machine, port_answers
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

import hexa_event as he
from hexa_event.drivers.sql import SqlOptions
from hexa_event.drivers.sql.schema import make_engine

BATCH = 500
KEYS = 64
FETCH = 256
BEFORE = {"sqlite": 11_700, "postgresql": 11_100}
"""Our rates before contract v2 (README, same machine): the target is no slower."""
PG_URL = os.environ.get("HEXA_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/hexa_event")


@dataclass
class Tick:
    n: int
    name: str


class Backend:
    def __init__(self, name: str) -> None:
        self.name = name
        self.tmp = Path(tempfile.mkdtemp(prefix="hexa-sql-bench-"))
        self.rounds = 0

    def url(self) -> str:
        """A fresh database (SQLite) or the shared one (PostgreSQL; fresh channel names)."""
        self.rounds += 1
        if self.name == "sqlite":
            return f"sqlite:///{self.tmp / f'round-{self.rounds}.db'}"
        return PG_URL


# -- reference: the same inserts / selects / updates with no library around them --------


async def _bare_setup(engine: AsyncEngine, table: str) -> None:
    pg = engine.dialect.name == "postgresql"
    ident = "BIGSERIAL PRIMARY KEY" if pg else "INTEGER PRIMARY KEY AUTOINCREMENT"
    blob = "BYTEA" if pg else "BLOB"
    async with engine.connect() as conn:
        if not pg:
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        await conn.execute(
            text(
                f"CREATE TABLE {table} (id {ident}, channel VARCHAR(255) NOT NULL, "
                f"msg_key TEXT NOT NULL, headers {blob} NOT NULL, body {blob} NOT NULL, "
                "created_ms BIGINT NOT NULL)"
            )
        )
        await conn.execute(
            text(f"CREATE TABLE {table}_pos (grp VARCHAR(255) PRIMARY KEY, pos BIGINT NOT NULL)")
        )
        await conn.execute(text(f"INSERT INTO {table}_pos VALUES ('g', 0)"))
        await conn.commit()


async def bare_round(backend: Backend, count: int) -> float:
    from _harness import timed

    engine = make_engine(SqlOptions(url=backend.url()))
    table = f"bench_{uuid.uuid4().hex[:10]}"
    await _bare_setup(engine, table)
    sqlite = engine.dialect.name == "sqlite"
    encoder = msgspec.json.Encoder()
    encode_headers = msgspec.msgpack.Encoder().encode
    decode_headers = msgspec.msgpack.Decoder(dict[str, bytes]).decode
    decoder = msgspec.json.Decoder(Tick)
    write_lock = asyncio.Lock()
    wake = asyncio.Event()
    done = asyncio.Event()
    insert = text(
        f"INSERT INTO {table} (channel, msg_key, headers, body, created_ms) "
        "VALUES (:channel, :msg_key, :headers, :body, :created_ms)"
    )
    select = text(
        f"SELECT id, msg_key, headers, body FROM {table} WHERE id > :pos ORDER BY id LIMIT {FETCH}"
    )
    update = text(f"UPDATE {table}_pos SET pos = :pos WHERE grp = 'g'")

    async def write(statement: Any, params: Any) -> None:
        async with write_lock, engine.connect() as conn:
            if sqlite:
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
            await conn.execute(statement, params)
            await conn.commit()

    async def consume() -> None:
        pos, seen = 0, 0
        while seen < count:
            wake.clear()
            async with engine.connect() as conn:
                rows = (await conn.execute(select, {"pos": pos})).all()
            if not rows:
                await wake.wait()
                continue
            for row in rows:
                decode_headers(row.headers)
                decoder.decode(row.body)
            seen += len(rows)
            pos = rows[-1].id
            await write(update, {"pos": pos})
        done.set()

    async def body() -> None:
        consumer = asyncio.create_task(consume())
        for start in range(0, count, BATCH):
            rows = [
                {
                    "channel": "ticks",
                    "msg_key": f"k{n % KEYS}",
                    "headers": encode_headers({"id": str(n).encode()}),
                    "body": encoder.encode(Tick(n, "tick")),
                    "created_ms": 0,
                }
                for n in range(start, min(start + BATCH, count))
            ]
            await write(insert, rows)
            wake.set()
        await done.wait()
        await consumer

    rate = await timed(count, body)
    if not sqlite:
        async with engine.connect() as conn:
            await conn.execute(text(f"DROP TABLE {table}"))
            await conn.execute(text(f"DROP TABLE {table}_pos"))
            await conn.commit()
    await engine.dispose()
    return rate


# -- ours: through the public API -----------------------------------------------------------


async def ours_round(backend: Backend, count: int, *, publish_rates: list[float]) -> float:
    from _harness import timed

    driver = he.connect(backend.url())
    tag = uuid.uuid4().hex[:8]
    channel = f"ticks-{tag}"
    await driver.provision([channel])
    emitter = driver.emitter()
    receiver = driver.receiver("bench", concurrency=256)
    done = asyncio.Event()
    seen = 0

    @receiver.subscribe(channel, action=f"bench.count.{tag}", payload=Tick)
    async def handle(ctx: he.Context, msg: he.Message[Tick]) -> None:
        nonlocal seen
        seen += 1
        if seen == count:
            done.set()

    async def publish() -> None:
        for start in range(0, count, BATCH):
            await emitter.emit_many(
                he.Event(channel, f"k{n % KEYS}", Tick(n, "tick"))
                for n in range(start, min(start + BATCH, count))
            )

    async def body() -> None:
        async with receiver:
            publish_rates.append(await timed(count, publish))
            await done.wait()

    rate = await timed(count, body)
    await driver.close()
    return rate


async def main() -> None:
    parser = cli_parser(__doc__.splitlines()[0], 20_000, rounds=3)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    results: list[dict[str, object]] = []
    for name in args.backends.split(","):
        if name == "postgresql" and not port_answers(PG_URL, 5432, timeout=1):
            print(f"\nPostgreSQL at {urlsplit(PG_URL).hostname} does not answer: skipped")
            continue
        backend = Backend(name)
        publish_rates: list[float] = []
        result = await compare(
            f"SQL driver end to end on {name} (emit -> handle -> ack)",
            args.count,
            (f"bare SQLAlchemy {name} insert/select/update", partial(bare_round, backend)),
            (f"hexa-event {name}://", partial(ours_round, backend, publish_rates=publish_rates)),
            rounds=args.rounds,
            target=f"ours >= {BEFORE[name]:,}/s",
        )
        publish = sorted(publish_rates)[len(publish_rates) // 2]
        print(f"  hexa-event publish alone (emit_many x{BATCH}), median {publish:>10,.0f} events/s")
        result["publish_median"] = publish
        results.append(result)
    print(
        "\nPublished peer (not run here): Watermill SQL pub/sub on PostgreSQL, 16 cores: "
        "~3,800 events/s publish, ~455 events/s subscribe."
    )
    print(f"Machine: {machine()}")
    if args.json:
        await asyncio.to_thread(Path(args.json).write_text, json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
