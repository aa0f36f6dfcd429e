"""PostgreSQL: trust auth on loopback, psycopg 3 and SQLAlchemy against `hexa_event`."""

from __future__ import annotations

import pytest

from hexa_event_services import unique_name as unique

pytestmark = pytest.mark.postgres

psycopg = pytest.importorskip("psycopg")


def test_psycopg(postgres_url: str) -> None:
    table = unique("smoke").replace("-", "_")
    with psycopg.connect(postgres_url, connect_timeout=10, autocommit=True) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        assert conn.execute("select current_database()").fetchone() == ("hexa_event",)
        conn.execute(f"create table {table} (id int primary key, body text not null)")
        try:
            conn.execute(f"insert into {table} values (1, 'hello')")
            assert conn.execute(f"select body from {table} where id = 1").fetchone() == ("hello",)
        finally:
            conn.execute(f"drop table {table}")


async def test_psycopg_async(postgres_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(postgres_url, connect_timeout=10) as conn:
        cur = await conn.execute("select 41 + 1")
        assert await cur.fetchone() == (42,)


def test_sqlalchemy(postgres_url: str) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    engine = sqlalchemy.create_engine(
        postgres_url.replace("postgresql://", "postgresql+psycopg://", 1)
    )
    try:
        with engine.begin() as conn:
            assert conn.execute(sqlalchemy.text("select 1")).scalar_one() == 1
    finally:
        engine.dispose()
