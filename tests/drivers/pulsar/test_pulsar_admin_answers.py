"""What the Pulsar admin API answers is read defensively: a backlog that is not a number is
unknown, not an exception that ends the subscription's watch (lag and connection reports)."""

from __future__ import annotations

from typing import Any

import pytest

from hexa_event.drivers.pulsar import PulsarOptions
from hexa_event.drivers.pulsar.admin import PulsarAdmin


class _Admin(PulsarAdmin):
    def __init__(self, backlog: Any) -> None:
        super().__init__(PulsarOptions())
        self.backlog_value = backlog

    def _call(
        self, method: str, channel: str | None, path: str = "", body: Any = None
    ) -> tuple[int, Any]:
        return 200, {"subscriptions": {"sub": {"msgBacklog": self.backlog_value}}}


@pytest.mark.parametrize("value", ["many", "12", None, 1.5, True, [3], {"n": 1}])
def test_a_backlog_that_is_not_a_number_is_unknown(value: Any) -> None:
    assert _Admin(value).backlog(["orders"], "sub") == {"orders": None}


def test_a_backlog_is_read() -> None:
    assert _Admin(7).backlog(["orders", "orders"], "sub") == {"orders": 7}
