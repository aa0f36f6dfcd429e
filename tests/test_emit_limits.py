"""Issue 23 #5: an emit over an engine's limit fails before (or instead of) being stored,
with our NotStoredError naming the limit, known not stored, not retriable; the connection
goes on working. (NATS and STAN: tests/drivers/nats|stan/test_*_limits.py.)"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

import hexa_event as he
from hexa_event.errors import NotStoredError
from hexa_event_services import require_service


def _url(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    env = os.environ.get
    if engine == "sqlite":
        return f"sqlite:///{tmp_path / 'log.db'}"
    if engine == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    require_service(engine)
    if engine == "kafka":
        return f"kafka://{env('HEXA_KAFKA_BOOTSTRAP', '127.0.0.1:9092')}"
    return f"{env('HEXA_PULSAR_URL', 'pulsar://127.0.0.1:6650')}?admin_url=" + env(
        "HEXA_PULSAR_ADMIN_URL", "http://127.0.0.1:8080"
    )


def _refused(exc: pytest.ExceptionInfo[NotStoredError], limit: str, *words: str) -> None:
    assert exc.value.limit == limit
    assert not exc.value.retriable
    for word in words:
        assert word in str(exc.value), str(exc.value)


CASES: list[Any] = [
    pytest.param("kafka", "body", "message.max.bytes", marks=pytest.mark.kafka),
    pytest.param("pulsar", "body", "maxMessageSize", marks=pytest.mark.pulsar),
    pytest.param("pulsar", "channel with space", "topic name", marks=pytest.mark.pulsar),
    pytest.param("pulsar", "channel/with/slash", "topic name", marks=pytest.mark.pulsar),
    pytest.param("postgresql", "long channel", "channel length", marks=pytest.mark.postgres),
    pytest.param("postgresql", "nul key", "key characters", marks=pytest.mark.postgres),
    pytest.param("sqlite", "long channel", "channel length"),
    pytest.param("sqlite", "nul key", "key characters"),
]


@pytest.mark.parametrize(("engine", "case", "limit"), CASES)
async def test_an_emit_over_a_limit_names_it_and_is_not_stored(
    engine: str, case: str, limit: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = _url(engine, tmp_path, request)
    channel = f"limits-{uuid.uuid4().hex[:8]}"
    conn = he.connect(url)
    emitter = conn.emitter()
    try:
        if case == "body":
            event = he.Event(channel, "k", {"blob": "b" * (8 * 1024 * 1024)})
        elif case == "long channel":
            event = he.Event("c" * 300, "k", {"n": 1})
        elif case == "nul key":
            event = he.Event(channel, "k\x00ey", {"n": 1})
        else:
            event = he.Event(f"{case}-{channel}", "k", {"n": 1})
        with pytest.raises(NotStoredError) as caught:
            await emitter.emit(event)
        _refused(caught, limit)
        # Nothing was stored: a reader from the start sees only the next emit.
        await emitter.emit(he.Event(channel, "k", {"n": 2}))
        got: list[Any] = []
        receiver = conn.receiver("svc")

        @receiver.subscribe(channel, action=f"act-{channel}")
        async def handle(_c: he.Context, msg: he.Message[Any]) -> None:
            got.append(msg.payload)

        async with receiver:
            from hexa_event.testing import eventually

            await eventually(lambda: len(got) >= 1, within=60)
        assert got == [{"n": 2}]
    finally:
        await conn.close()
