"""A secured Kafka node on demand (``up kafka-secure``): TLS and SASL/SCRAM listeners.

One KRaft node (broker and controller) with four listeners on loopback, by default:

========  =================  ===============================================================
port      listener           for
========  =================  ===============================================================
19392     INTERNAL           PLAINTEXT: inter-broker traffic and the readiness probe only
19393     SASL_SSL           clients: TLS (server certificate signed by the test CA) and
                             SASL/SCRAM-SHA-256 or -512 (user ``hexa``, see ``SASL_USERS``)
19394     SSL                clients: mutual TLS, a client certificate signed by the test CA
                             is required
19395     CONTROLLER         the KRaft controller
========  =================  ===============================================================

``HEXA_KAFKA_SECURE_BOOTSTRAP`` (default ``127.0.0.1:19393``) moves them all (the others
are its port -1, +1, +2). The CA and certificates are made with ``openssl`` when the node
starts fresh, in ``run/kafka-secure/tls/`` (``ca.pem``, ``client.pem``/``client.key``,
``other-ca.pem``, a CA nobody trusts). SCRAM users are created when the storage is
formatted (``kafka-storage format --add-scram``). Test credentials only.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from ..config import BIND_HOST, env
from ..probes import kafka_probe
from ..tls import make_test_pki
from .kafka import Kafka

SASL_USERS: dict[str, str] = {"hexa": "hexa-test-secret"}
"""SCRAM users (both mechanisms) and their passwords: test credentials."""

_SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule required;"


class KafkaSecure(Kafka):
    name = "kafka-secure"
    stop_timeout = 30.0
    heap_env: ClassVar[str] = "HEXA_KAFKA_SECURE_HEAP"
    default_heap: ClassVar[str] = "-Xms128m -Xmx512m"

    @property
    def url(self) -> str:
        """The SASL_SSL bootstrap address."""
        return env("HEXA_KAFKA_SECURE_BOOTSTRAP")

    @property
    def internal_port(self) -> int:
        return self.port - 1

    @property
    def mtls_port(self) -> int:
        return self.port + 1

    @property
    def controller_port(self) -> int:
        return self.port + 2

    @property
    def ports(self) -> list[int]:
        return [self.internal_port, self.port, self.mtls_port, self.controller_port]

    @property
    def mtls_url(self) -> str:
        """The mutual-TLS bootstrap address."""
        return f"{self.host}:{self.mtls_port}"

    @property
    def username(self) -> str:
        """The SCRAM user tests log in as."""
        return next(iter(SASL_USERS))

    @property
    def password(self) -> str:
        return SASL_USERS[self.username]

    @property
    def tls_dir(self) -> Path:
        return self.run_dir / "tls"

    def tls_file(self, name: str) -> str:
        """Path of ``ca.pem``, ``client.pem``, ``client.key``, ``other-ca.pem``..."""
        return str(self.tls_dir / name)

    def properties(self) -> dict[str, str]:
        props = super().properties()
        h, c = BIND_HOST, self.controller_port
        tls = self.tls_dir
        props.update(
            {
                "listeners": (
                    f"INTERNAL://{h}:{self.internal_port},SASL_SSL://{h}:{self.port},"
                    f"SSL://{h}:{self.mtls_port},CONTROLLER://{h}:{c}"
                ),
                "advertised.listeners": (
                    f"INTERNAL://{h}:{self.internal_port},SASL_SSL://{h}:{self.port},"
                    f"SSL://{h}:{self.mtls_port},CONTROLLER://{h}:{c}"
                ),
                "inter.broker.listener.name": "INTERNAL",
                "listener.security.protocol.map": (
                    "CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL"
                ),
                "sasl.enabled.mechanisms": "SCRAM-SHA-256,SCRAM-SHA-512",
                "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": _SCRAM_LOGIN,
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": _SCRAM_LOGIN,
                "ssl.keystore.type": "PEM",
                "ssl.keystore.location": str(tls / "server-keystore.pem"),
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": str(tls / "ca.pem"),
                "listener.name.ssl.ssl.client.auth": "required",
            }
        )
        return props

    def format_args(self) -> list[str]:
        args = ["--standalone"]
        for user, password in SASL_USERS.items():
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                args += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
        return args

    def _prepare(self, fresh: bool) -> None:
        if fresh or not (self.tls_dir / "server-keystore.pem").is_file():
            if self.tls_dir.exists():
                for p in self.tls_dir.iterdir():
                    p.unlink()
            make_test_pki(self.tls_dir)
        super()._prepare(fresh)

    def probe(self, timeout: float = 5.0, deep: bool = True) -> None:
        kafka_probe(f"{self.host}:{self.internal_port}", timeout)
