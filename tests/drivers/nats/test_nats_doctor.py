"""``hexa-event doctor`` on JetStream: what it tells of an action's consumer."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
from nats_helpers import PARTITIONED_OPTIONS, TEST_OPTIONS

from cli_helpers import doctor_on_a_waiting_group

pytestmark = pytest.mark.nats


def url_of(server: str, options: dict[str, Any]) -> str:
    return f"{server}?{urlencode(options)}"


async def test_doctor_says_who_consumes_a_partitioned_action(
    nats_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a partitioned stream the members' leases tell who consumes: records pending with
    no live member is a warning. It said only that the consumer exists."""
    url = url_of(nats_server, PARTITIONED_OPTIONS)
    _, live, gone = await doctor_on_a_waiting_group(url, capsys, "consumer")
    assert live["status"] == "ok", live
    assert live["detail"].startswith("exists; 1 live member(s); ")
    assert live["detail"].endswith(" pull request(s) waiting; lag 3")
    assert gone["status"] == "warn", gone
    assert gone["detail"] == (
        "exists; 0 live member(s); 0 pull request(s) waiting; lag 3: nothing consumes it"
    )
    assert gone["fix"].startswith("start a receiver for this action")


async def test_doctor_gives_an_unpartitioned_consumers_figures(
    nats_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unpartitioned consumer tells no members (a live member whose prefetch is full
    has no pull waiting): doctor gives its pull requests waiting and its lag, never a
    warning. It said only that the consumer exists."""
    url = url_of(nats_server, TEST_OPTIONS)
    _, live, gone = await doctor_on_a_waiting_group(url, capsys, "consumer")
    assert live["status"] == "ok", live
    assert live["detail"].startswith("exists; ")
    assert live["detail"].endswith(" pull request(s) waiting; lag 3")
    assert gone["status"] == "ok", gone
    assert gone["detail"] == "exists; 0 pull request(s) waiting; lag 3"
