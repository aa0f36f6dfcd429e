"""Retry policy: Go hexa-event's defaults and back-off table, validation."""

from __future__ import annotations

import pytest

from hexa_event import RetryPolicy, dead_letter_channel, retry_channel
from hexa_event.errors import ConfigurationError
from hexa_event.retry import retry_number_of


def test_defaults_are_go_hexa_events() -> None:
    policy = RetryPolicy()
    assert policy.max_retries == 4
    assert [policy.delay(n) for n in range(1, 5)] == [1, 2, 4, 8]
    assert policy.delay_cap == 100


def test_backoff_is_capped_like_go() -> None:
    policy = RetryPolicy(max_retries=10, initial_delay=2, coefficient=2)
    assert [policy.delay(n) for n in range(1, 10)] == [2, 4, 8, 16, 32, 64, 128, 200, 200]
    assert RetryPolicy(initial_delay=1, max_delay=3).delay(5) == 3
    assert RetryPolicy().delay(10_000) == 100


def test_channel_names_are_per_action_like_go() -> None:
    assert retry_channel("check_war_message", 1) == "check_war_message.retry.1"
    assert dead_letter_channel("check_war_message") == "check_war_message.dlq"
    assert retry_number_of("check_war_message.retry.3", "check_war_message") == 3
    assert retry_number_of("orders.v2", "check_war_message") == 0
    assert retry_number_of("act.retry.x", "act") == 0


@pytest.mark.parametrize(
    "kwargs",
    [{"max_retries": -1}, {"initial_delay": -1}, {"coefficient": 0.5}, {"max_delay": -2}],
)
def test_invalid_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError, match="RetryPolicy"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_the_receiver_chain_names_channels_with_the_retry_module() -> None:
    """One naming module: the chain the receiver uses answers what ``retry`` answers."""
    from hexa_event.wire import Chain

    chain = Chain(action="act", base="base", policy=RetryPolicy())
    assert chain.retry_channel(3) == retry_channel("base", 3) == "base.retry.3"
    assert chain.dead_letter_channel == dead_letter_channel("base") == "base.dlq"
    for channel in ("base.retry.3", "base.retry.123456", "base.retry.1234567", "act.retry.2"):
        assert chain.retry_number_of(channel) == retry_number_of(channel, "base")
    assert retry_number_of("base.retry.1234567", "base") == 0  # beyond any real retry count
