"""The Kafka driver's less travelled paths: a user's own librdkafka statistics callback, a
commit refused while partitions move, a subscribe cancelled or overtaken by close, a
publish waiting for room at close, headers confluent-kafka cannot read."""

from __future__ import annotations

import uuid

from confluent_kafka import KafkaError

from hexa_event.driver import SubscriptionSpec
from hexa_event.drivers.kafka import KafkaDriver
from hexa_event.drivers.kafka.consumer import KafkaSubscription
from hexa_event.testing.waiting import eventually

# -- a user's own stats_cb ---------------------------------------------------------------------


async def test_a_users_stats_cb_still_lets_health_see_the_brokers_answer(
    kafka_bootstrap: str,
) -> None:
    """With ``stats_cb`` in the config, the driver's statistics rules were off: an outage
    (every broker down) ended only when records flowed, so an idle subscription stayed
    unhealthy after the brokers were back. Both callbacks are called now."""
    tag = uuid.uuid4().hex[:8]
    theirs: list[str] = []
    driver = KafkaDriver(
        bootstrap_servers=kafka_bootstrap,
        partitions=1,
        consumer_config={"stats_cb": theirs.append, "statistics.interval.ms": 300},
    )
    try:
        sub = await driver.subscribe(SubscriptionSpec(group=f"st-{tag}", channels=(f"st-{tag}",)))
        assert isinstance(sub, KafkaSubscription)
        (member,) = sub._members
        member.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
        assert member.all_down
        assert "_ALL_BROKERS_DOWN" in sub.status().error
        # No record flows: only the statistics can tell that the brokers answer.
        await eventually(lambda: not sub.status().error, within=15, what="health clean again")
        assert not member.all_down
        assert theirs, "the user's stats_cb was not called"
    finally:
        await driver.close()
