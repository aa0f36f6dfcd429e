"""The soak's own brokers, started on demand (``up kafka-soak nats-soak``; ``make soak``).

A long soak measures what the process under load holds; on the shared ``kafka`` and
``nats`` it also measures every restart other suites make (the first 60-minute soak saw
four). These two are used by nobody else and restarted by no test:

- ``kafka-soak``: one KRaft node (broker and controller) like the shared ``kafka``, at
  ``HEXA_KAFKA_SOAK_BOOTSTRAP`` (default ``127.0.0.1:19592``), controller on the port + 1
  (19593), data in ``run/kafka-soak/``, heap ``HEXA_KAFKA_SOAK_HEAP``;
- ``nats-soak``: one unclustered nats-server with JetStream at ``HEXA_NATS_SOAK_URL``
  (default ``nats://127.0.0.1:14226``), monitoring on the port + 4000 (18226), store in
  ``run/nats-soak/data``.
"""

from __future__ import annotations

from typing import ClassVar

from ..config import env
from .kafka import Kafka
from .nats_cluster import NatsSolo


class KafkaSoak(Kafka):
    name = "kafka-soak"
    stop_timeout = 30.0
    heap_env: ClassVar[str] = "HEXA_KAFKA_SOAK_HEAP"

    @property
    def url(self) -> str:
        return env("HEXA_KAFKA_SOAK_BOOTSTRAP")

    @property
    def controller_port(self) -> int:
        return self.port + 1


class NatsSoak(NatsSolo):
    """Configured like ``nats-solo`` (JetStream on, 256 MB memory / 4 GB file store)."""

    name = "nats-soak"

    @property
    def url(self) -> str:
        return env("HEXA_NATS_SOAK_URL")
