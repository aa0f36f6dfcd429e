"""The ``kafka://`` driver: confluent-kafka (librdkafka) with an asyncio bridge."""

from .driver import KafkaDriver
from .options import KafkaOptions, KafkaSubscriptionOptions
from .partitioner import sarama_partition

__all__ = ["KafkaDriver", "KafkaOptions", "KafkaSubscriptionOptions", "sarama_partition"]
