"""A factory's async generator cleans up after itself also when what it yielded is refused
(the connections it opened are closed, not left to the garbage collector)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

import hexa_event as he
from hexa_event.runner.targets import open_components


@pytest.mark.parametrize(("built", "message"), [(42, "give a Receiver"), ([], "holds no receiver")])
async def test_a_factory_generator_cleans_up_when_its_target_is_refused(
    built: Any, message: str
) -> None:
    cleaned: list[str] = []

    async def build() -> AsyncIterator[Any]:
        yield built
        cleaned.append("closed its connections")

    with pytest.raises(he.ConfigurationError, match=message):
        async with open_components(build):
            pass
    assert cleaned == ["closed its connections"]
