"""The emit path's record checks: the sealer vouches for its headers (SealedRecords) only
for the driver an emitter hands them straight to; anything changed or seen on the way, and
anything the sealer did not make itself, still gets every check and the same refusal."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

import hexa_event as he
from hexa_event.context import Context
from hexa_event.driver import (
    Driver,
    RawRecord,
    SealedRecords,
    Subscription,
    SubscriptionSpec,
    check_records,
)
from hexa_event.drivers.memory import MemoryDriver
from hexa_event.emitter import Emitter
from hexa_event.envelope import EVENT_ID, Envelope
from hexa_event.errors import InvalidEventError
from hexa_event.propagation import default_propagator
from hexa_event.publishing import Publication, PublishCall


class Spy(MemoryDriver):
    """A memory driver that keeps the lists its publish was handed."""

    def __init__(self) -> None:
        super().__init__()
        self.handed: list[Sequence[RawRecord]] = []

    async def send(self, records: Sequence[RawRecord]) -> None:
        self.handed.append(records)
        await super().send(records)


def _refused_for_headers(exc: pytest.ExceptionInfo[InvalidEventError]) -> None:
    assert exc.value.field == "headers"
    assert "not bytes" in str(exc.value)


async def test_an_emitter_vouches_for_what_it_sealed_to_its_own_driver_only() -> None:
    driver = Spy()
    emitter = Emitter(driver)
    await emitter.emit(he.Event("orders", "k", {"n": 1}))
    await emitter.emit_many([he.Event("orders", "k", {"n": n}) for n in range(3)])
    await emitter.emit_many(
        [he.Event("orders", "k", {"n": n}) for n in range(2)], [Context(), Context()]
    )
    assert len(driver.handed) == 3
    for records in driver.handed:
        assert type(records) is SealedRecords
        assert records.driver is driver
    await driver.close()


async def test_a_sealed_list_changed_afterwards_is_refused_by_a_driver() -> None:
    driver = MemoryDriver()
    records = Envelope().seal_many([he.Event("orders", "k", {"n": 1})])
    assert type(records) is SealedRecords
    assert records.driver is None  # nobody vouched: every check runs
    records[0].headers[EVENT_ID] = 7  # type: ignore[index]
    with pytest.raises(InvalidEventError) as exc:
        await driver.publish(records)
    _refused_for_headers(exc)
    await driver.close()


async def test_a_list_vouched_for_another_driver_gets_every_check() -> None:
    driver, other = MemoryDriver(), MemoryDriver()
    records = Envelope().seal_many([he.Event("orders", "k", {"n": 1})])
    records.driver = other
    records[0].headers[EVENT_ID] = "text"  # type: ignore[index]
    with pytest.raises(InvalidEventError) as exc:
        await driver.publish(records)
    _refused_for_headers(exc)
    with pytest.raises(InvalidEventError):
        check_records(records)  # no driver named: every check
    await driver.close()


async def test_a_publish_middleware_that_breaks_a_header_is_refused() -> None:
    driver = MemoryDriver()

    def breaks(call: PublishCall) -> PublishCall:
        async def publish(publication: Publication) -> None:
            publication.records[0].headers[EVENT_ID] = 42  # type: ignore[index]
            await call(publication)

        return publish

    emitter = Emitter(driver, publish_middlewares=[breaks])
    with pytest.raises(InvalidEventError) as exc:
        await emitter.emit(he.Event("orders", "k", {"n": 1}))
    _refused_for_headers(exc)
    await driver.close()


class Wrapper(Driver):
    """A user's driver around ours that changes records in place before passing them on."""

    features = MemoryDriver.features

    def __init__(self, inner: Driver) -> None:
        self.inner = inner

    async def publish(self, records: Sequence[RawRecord]) -> None:
        for record in records:
            record.headers["trace"] = None  # type: ignore[index]
        await self.inner.publish(records)

    async def subscribe(self, spec: SubscriptionSpec) -> Subscription:
        return await self.inner.subscribe(spec)

    async def close(self) -> None:
        await self.inner.close()


async def test_a_wrapping_driver_that_breaks_a_header_is_refused_by_the_inner_one() -> None:
    driver = Wrapper(MemoryDriver())
    with pytest.raises(InvalidEventError) as exc:
        await Emitter(driver).emit(he.Event("orders", "k", {"n": 1}))
    _refused_for_headers(exc)
    await driver.close()


class TextPropagator:
    """A propagator that writes a text value (a mistake the driver must still refuse)."""

    def inject(self, ctx: Context, headers: dict[str, Any]) -> None:
        default_propagator().inject(ctx, headers)
        headers["tenant"] = "acme"

    def extract(self, headers: Mapping[str, bytes], ctx: Context) -> Context:
        return ctx


async def test_headers_the_sealer_did_not_make_itself_are_checked() -> None:
    driver = Spy()
    emitter = Emitter(driver, propagator=TextPropagator())
    with pytest.raises(InvalidEventError) as exc:
        await emitter.emit(he.Event("orders", "k", {"n": 1}))
    _refused_for_headers(exc)
    # An event's own headers changed after the event was made: not vouched for either.
    headers: dict[str, Any] = {"tenant": b"acme"}
    event = he.Event("orders", "k", {"n": 1}, headers=headers)
    headers["tenant"] = 3
    with pytest.raises(InvalidEventError) as exc:
        await Emitter(driver).emit(event)
    _refused_for_headers(exc)
    # Good ones of its own are still vouched for.
    await Emitter(driver).emit(he.Event("orders", "k", {"n": 1}, headers={"tenant": "acme"}))
    assert type(driver.handed[-1]) is SealedRecords
    assert driver.handed[-1][0].headers["tenant"] == b"acme"
    await driver.close()


def test_a_hand_built_record_with_a_text_header_is_refused_as_before() -> None:
    record = RawRecord("orders", "k", {"h": "text"}, b"x")  # type: ignore[dict-item]
    with pytest.raises(InvalidEventError) as exc:
        check_records([record])
    _refused_for_headers(exc)
    with pytest.raises(InvalidEventError) as exc:
        check_records(SealedRecords([record]))
    _refused_for_headers(exc)


class BytearrayCodec:
    """A user's codec whose encode returns a bytearray (the driver must still refuse it)."""

    name = "bytearray-test"
    content_type = "application/octet-stream"

    def encode(self, value: Any) -> bytes:
        return bytearray(b"x")  # type: ignore[return-value]

    def decode(self, data: bytes, target: type[Any] | None) -> Any:
        return data


async def test_records_the_sealer_could_not_vouch_for_get_the_same_refusals() -> None:
    driver = Spy()
    emitter = Emitter(driver)
    # The channel is checked once per channel object, not per record: a bad one in the
    # middle of a batch of good ones is still refused, naming the channel.
    events = [he.Event("orders", "k", {"n": 1}), he.Event("or\x00ders", "k", {"n": 2})]
    with pytest.raises(InvalidEventError) as exc:
        await emitter.emit_many(events)
    assert exc.value.field == "channel"
    with pytest.raises(InvalidEventError) as exc:
        await Emitter(driver, codec=BytearrayCodec()).emit(he.Event("orders", "k", 1))
    assert exc.value.field == "body"
    assert driver.handed == []
    await driver.close()


async def test_a_telemetry_connection_hands_its_emitters_records_on_vouched_for() -> None:
    from hexa_event.telemetry import Telemetry

    driver = Spy()
    conn = Telemetry().instrument(driver)
    emitter = conn.emitter()
    await emitter.emit_many([he.Event("orders", "k", {"n": n}) for n in range(3)])
    (records,) = driver.handed
    assert type(records) is SealedRecords
    assert records.driver is driver  # the inner driver skips the checks done at sealing
    # A list vouched for nobody, or for another driver, stays unvouched through it.
    unvouched = Envelope().seal_many([he.Event("orders", "k", {"n": 1})])
    await conn.publish(unvouched)
    assert driver.handed[-1].driver is None  # type: ignore[attr-defined]
    await conn.close()


class BinaryPropagator:
    """A propagator that writes bytes that are not UTF-8 (allowed: headers are bytes)."""

    def inject(self, ctx: Context, headers: dict[str, Any]) -> None:
        default_propagator().inject(ctx, headers)
        headers["trace-bin"] = b"\xff\x00"

    def extract(self, headers: Mapping[str, bytes], ctx: Context) -> Context:
        return ctx


def _text(records: list[RawRecord]) -> bool:
    """What the sealer said of a list it vouches for."""
    assert type(records) is SealedRecords
    return records.text


def test_the_sealer_says_whether_every_header_value_is_utf8() -> None:
    envelope = Envelope()
    plain = [he.Event("orders", "k", {"n": 1}), he.Event("orders", "k\xe9", {"n": 2})]
    assert _text(envelope.seal_many(plain))
    texts = {"tenant": "acm\xe9", "raw": "caf\xe9".encode()}
    assert _text(envelope.seal_many([he.Event("orders", "k", 1, headers=texts)]))
    odd = he.Event("orders", "k", 1, headers={"raw": b"\xff"})
    assert not _text(envelope.seal_many([*plain, odd, *plain]))  # still vouched: bytes are fine
    assert not _text(Envelope(propagator=BinaryPropagator()).seal_many(plain))
    # One context per event: every context's records count.
    contexts = [Context(), Context(), Context()]
    assert _text(envelope.seal_each([*plain, plain[0]], contexts))
    for three in ([odd, *plain], [*plain, odd], [plain[0], odd, plain[1]]):
        assert not _text(envelope.seal_each(three, contexts))
    # Only the sealer says so: a list built by hand claims nothing.
    assert not SealedRecords(envelope.seal_many(plain)).text
