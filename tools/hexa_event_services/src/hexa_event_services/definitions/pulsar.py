"""Pulsar standalone from the Maven Central distribution tarball."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..config import (
    BIND_HOST,
    LOOPBACK_HOSTS,
    ServiceError,
    env,
    say,
    split_hostport,
)
from ..installers import (
    java,
    maven_repo,
    run_command,
    run_mvn,
    verify_maven_sha1,
)
from ..probes import pulsar_probe
from ..supervisor import Service, wipe

# --------------------------------------------------------------------------------------
# Pulsar
# --------------------------------------------------------------------------------------


class Pulsar(Service):
    name = "pulsar"
    stop_timeout = 60.0

    @property
    def url(self) -> str:
        return env("HEXA_PULSAR_URL")

    @property
    def admin_url(self) -> str:
        return env("HEXA_PULSAR_ADMIN_URL")

    @property
    def host(self) -> str:
        h1 = split_hostport(self.url, 6650)[0]
        h2 = split_hostport(self.admin_url, 8080)[0]
        return h1 if h1 not in LOOPBACK_HOSTS else h2

    @property
    def bookie_port(self) -> int:
        return int(os.environ.get("HEXA_PULSAR_BOOKIE_PORT") or 3181)

    @property
    def ports(self) -> list[int]:
        return [
            split_hostport(self.url, 6650)[1],
            split_hostport(self.admin_url, 8080)[1],
            self.bookie_port,
        ]

    @property
    def home(self) -> Path:
        return self.install_dir / f"apache-pulsar-{self.version}"

    def _install(self) -> None:
        v = self.version
        artifact = f"org.apache.pulsar:pulsar-server-distribution:{v}:tar.gz:bin"
        say(f"pulsar: fetching {artifact} (~245 MB) with maven")
        run_mvn("dependency:get", f"-Dartifact={artifact}", "-Dtransitive=false")
        tarball = (
            maven_repo()
            / "org/apache/pulsar/pulsar-server-distribution"
            / v
            / f"pulsar-server-distribution-{v}-bin.tar.gz"
        )
        verify_maven_sha1(tarball)
        work = self.install_dir.with_name(v + f".tmp-{os.getpid()}")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        run_command(["tar", "-xzf", str(tarball), "-C", str(work)])  # gzip CRC checked by tar
        broker = work / f"apache-pulsar-{v}" / "lib" / f"org.apache.pulsar-pulsar-broker-{v}.jar"
        if not broker.is_file():
            raise ServiceError(f"pulsar: {broker.name} missing from the distribution")
        wipe(self.install_dir)
        work.replace(self.install_dir)

    def _prepare(self, fresh: bool) -> None:
        if fresh:
            wipe(self.data_dir)
        for d in (self.data_dir, self.run_dir / "logs", self.run_dir / "tmp"):
            d.mkdir(parents=True, exist_ok=True)
        overrides = {
            "clusterName": "standalone",
            "metadataStoreUrl": "",
            "configurationMetadataStoreUrl": "",
            "brokerServicePort": str(self.ports[0]),
            "webServicePort": str(self.ports[1]),
            "bindAddress": BIND_HOST,
            "bindAddresses": "",
            "advertisedAddress": BIND_HOST,
            "functionsWorkerEnabled": "false",
            "transactionCoordinatorEnabled": "false",
            "allowAutoTopicCreation": "true",
            "allowAutoTopicCreationType": "non-partitioned",
            "allowAutoSubscriptionCreation": "true",
            "brokerDeduplicationEnabled": "false",
            "acknowledgmentAtBatchIndexLevelEnabled": "true",
            "managedLedgerDefaultEnsembleSize": "1",
            "managedLedgerDefaultWriteQuorum": "1",
            "managedLedgerDefaultAckQuorum": "1",
            "managedLedgerCacheSizeMB": "64",
            "dbStorage_writeCacheMaxSizeMb": "32",
            "dbStorage_readAheadCacheMaxSizeMb": "32",
            "dbStorage_rocksDB_blockCacheSize": str(8 * 1024 * 1024),
            "numIOThreads": "2",
            "numHttpServerThreads": "4",
            "numOrderedExecutorThreads": "2",
            "topicOrderedExecutorThreadNum": "2",
            "numCacheExecutorThreadPoolSize": "2",
            "webSocketNumIoThreads": "2",
            "numWorkerThreadsForNonPersistentTopic": "2",
            "bookkeeperClientNumWorkerThreads": "2",
            "diskUsageThreshold": "0.99",
            "diskUsageWarnThreshold": "0.99",
            "allowLoopback": "true",
            # The embedded bookie binds all interfaces unless given an interface; and it
            # takes a random port unless ephemeral ports are "allowed" (BKCluster's rule).
            "listeningInterface": "lo",
            "allowEphemeralPorts": "true",
            "journalSyncData": "false",
        }
        stock = (self.home / "conf" / "standalone.conf").read_text().splitlines()
        out, seen = [], set()
        for line in stock:
            key = line.split("=", 1)[0].strip()
            if not line.lstrip().startswith("#") and "=" in line and key in overrides:
                out.append(f"{key}={overrides[key]}")
                seen.add(key)
            else:
                out.append(line)
        out += [f"{k}={v}" for k, v in overrides.items() if k not in seen]
        (self.run_dir / "standalone.conf").write_text("\n".join(out) + "\n")

    def _command(self) -> tuple[list[str], dict[str, str], Path, str | None]:
        mem = os.environ.get("HEXA_PULSAR_MEM", "-Xms256m -Xmx1g -XX:MaxDirectMemorySize=768m")
        gc_log = self.run_dir / "logs" / "gc.log"
        extra = {
            "JAVA_HOME": str(Path(java()).resolve().parent.parent),
            "PULSAR_STANDALONE_CONF": str(self.run_dir / "standalone.conf"),
            "PULSAR_LOG_DIR": str(self.run_dir / "logs"),
            "PULSAR_LOG_APPENDER": "Console",
            "PULSAR_ROUTING_APPENDER_DEFAULT": "Console",
            "PULSAR_LOG_LEVEL": "info",
            "PULSAR_LOG_ROOT_LEVEL": "info",
            "PULSAR_MEM": mem,
            "PULSAR_GC": "-XX:+UseG1GC -XX:ParallelGCThreads=2 -XX:ConcGCThreads=1 "
            "-XX:+PerfDisableSharedMem",
            "PULSAR_GC_LOG": f"-Xlog:gc:file={gc_log}:time,uptime:filecount=2,filesize=5M",
            "PULSAR_EXTRA_OPTS": "-Dpulsar.allocator.exit_on_oom=true "
            "-Dio.netty.recycler.maxCapacityPerThread=4096 -XX:+ExitOnOutOfMemoryError "
            f"-Djava.io.tmpdir={self.run_dir / 'tmp'}",
        }
        argv = [
            "bash",
            str(self.home / "bin" / "pulsar"),
            "standalone",
            "--no-functions-worker",
            "--no-stream-storage",
            "--advertised-address",
            BIND_HOST,
            "--metadata-dir",
            str(self.data_dir / "metadata"),
            "--bookkeeper-dir",
            str(self.data_dir / "bookkeeper"),
            "--bookkeeper-port",
            str(self.bookie_port),
        ]
        return argv, extra, self.run_dir, None

    def probe(self, timeout: float = 10.0, deep: bool = True) -> None:
        pulsar_probe(self.admin_url, timeout, deep=deep)
