"""Issue 20 #1: a handler that cannot take (ctx, msg) is refused at subscribe()."""

from __future__ import annotations

import functools
from typing import Any

import pytest

import hexa_event as he
from hexa_event.testing import eventually


def _receiver() -> he.Receiver:
    return he.connect("memory://").receiver("svc")


async def _needs_msg_only(msg: Any) -> None: ...


def _three(ctx: Any, msg: Any, extra: Any) -> None: ...


async def _keyword_only(ctx: Any, msg: Any, *, extra: Any) -> None: ...


class _OneArgCallable:
    def __call__(self, msg: Any) -> None: ...


@pytest.mark.parametrize(
    "handler",
    [_needs_msg_only, _three, _keyword_only, 42, _OneArgCallable(), lambda: None],
    ids=["async-msg-only", "three-args", "keyword-only", "not-callable", "object", "no-args"],
)
def test_wrong_handlers_are_refused_naming_the_signature(handler: Any) -> None:
    with pytest.raises(he.ConfigurationError) as caught:
        _receiver().subscribe("orders", action="a", handler=handler)
    assert "(ctx: he.Context, msg: he.Message[T]) -> None" in str(caught.value)
    assert "action='a'" in str(caught.value)


def test_the_decorator_form_is_checked_too() -> None:
    receiver = _receiver()
    with pytest.raises(he.ConfigurationError, match="cannot be called with"):

        @receiver.subscribe("orders", action="a")
        async def handle(msg: Any) -> None: ...

    assert "a" not in receiver.subscriptions


class _Service:
    async def handle(self, ctx: he.Context, msg: he.Message[Any]) -> None: ...

    def handle_sync(self, ctx: he.Context, msg: he.Message[Any]) -> None: ...


class _AsyncCallable:
    async def __call__(self, ctx: he.Context, msg: he.Message[Any]) -> None: ...


async def _with_dependency(db: object, ctx: he.Context, msg: he.Message[Any]) -> None: ...


def _sync(ctx: he.Context, msg: he.Message[Any], retries: int = 3) -> None: ...


def _varargs(*args: Any) -> None: ...


def _adds_a_session(handler: Any) -> Any:
    """A decorator like the inbox's: the wrapper takes (ctx, msg), the wrapped one more."""

    @functools.wraps(handler)
    async def wrapper(ctx: he.Context, msg: he.Message[Any]) -> None:
        await handler(ctx, msg, session=None)

    return wrapper


@_adds_a_session
async def _with_session(ctx: he.Context, msg: he.Message[Any], session: Any) -> None: ...


@pytest.mark.parametrize(
    "handler",
    [
        _Service().handle,
        _Service().handle_sync,
        _AsyncCallable(),
        functools.partial(_with_dependency, object()),
        _sync,
        _varargs,
        lambda ctx, msg: None,
        _with_session,
    ],
    ids=[
        "bound-async",
        "bound-sync",
        "callable",
        "partial",
        "defaults",
        "varargs",
        "lambda",
        "wraps",
    ],
)
def test_right_handlers_are_accepted(handler: Any) -> None:
    receiver = _receiver()
    receiver.subscribe("orders", action="a", handler=handler)
    assert "a" in receiver.subscriptions


async def test_an_accepted_partial_really_runs() -> None:
    conn = he.connect("memory://")
    seen: list[object] = []

    async def handle(tag: str, ctx: he.Context, msg: he.Message[Any]) -> None:
        seen.append((tag, msg.payload))

    receiver = conn.receiver("svc")
    receiver.subscribe("orders", action="a", handler=functools.partial(handle, "p"))
    async with receiver:
        await conn.emitter().emit(he.Event("orders", "k", {"n": 1}))
        await eventually(lambda: bool(seen), within=10)
    await conn.close()
    assert seen == [("p", {"n": 1})]


def test_dead_letter_handlers_are_checked() -> None:
    async def alert(letter: Any) -> None: ...

    with pytest.raises(he.ConfigurationError, match=r"letter: he\.DeadLetter"):
        he.subscribe_dead_letters(_receiver(), "billing", handler=alert)  # type: ignore[arg-type]
