"""A Pulsar send_timeout of 0 (or under a millisecond, which the driver hands pulsar-client as
0 ms) is refused by name: pulsar-client takes 0 as no timeout at all, so an emit the broker
never confirms waited for ever. No broker needed."""

from __future__ import annotations

import pytest

import hexa_event as he
from hexa_event.drivers.pulsar import PulsarOptions
from hexa_event.errors import ConfigurationError


@pytest.mark.parametrize("seconds", [0, 0.0, 0.0004])
def test_a_send_timeout_of_no_time_is_refused(seconds: float) -> None:
    with pytest.raises(ConfigurationError, match="send_timeout"):
        PulsarOptions(send_timeout=seconds)


def test_a_send_timeout_of_zero_in_a_url_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="send_timeout"):
        he.connect("pulsar://127.0.0.1:6650?send_timeout=0")


def test_the_shortest_send_timeout_is_a_millisecond() -> None:
    assert PulsarOptions(send_timeout=0.001).send_timeout == 0.001
