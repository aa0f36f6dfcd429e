"""``hexa-event doctor`` on JetStream: what it tells of an action's consumer."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
from nats_helpers import PARTITIONED_OPTIONS, TEST_OPTIONS

from cli_helpers import doctor_on_a_waiting_group

pytestmark = pytest.mark.nats

WARNED = "exists; 0 live member(s); 0 pull request(s) waiting; lag 3: nothing consumes it"


@pytest.mark.parametrize(
    ("options", "members", "gone"),
    [
        (PARTITIONED_OPTIONS, "1 live member(s); ", ("warn", WARNED)),
        (TEST_OPTIONS, "", ("ok", "exists; 0 pull request(s) waiting; lag 3")),
    ],
    ids=["partitioned", "unpartitioned"],
)
async def test_doctor_says_who_consumes_a_jetstream_action(
    nats_server: str,
    capsys: pytest.CaptureFixture[str],
    options: dict[str, Any],
    members: str,
    gone: tuple[str, str],
) -> None:
    """A consumer's finding gives its pull requests waiting and its lag (pending plus
    unacked). On a partitioned stream the members' leases tell who consumes, and records
    waiting with no live member is a warning; an unpartitioned consumer tells no members
    (a live member whose prefetch is full has no pull waiting), so it never warns. It said
    only that the consumer exists."""
    url = f"{nats_server}?{urlencode(options)}"
    _, live, left = await doctor_on_a_waiting_group(url, capsys, "consumer")
    assert live["status"] == "ok", live
    assert live["detail"].startswith(f"exists; {members}")
    assert live["detail"].endswith(" pull request(s) waiting; lag 3")
    assert (left["status"], left["detail"]) == gone
    if left["status"] == "warn":
        assert left["fix"].startswith("start a receiver for this action")
