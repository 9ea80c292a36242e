"""Shared fixtures: a real Kafka broker and PostgreSQL for integration tests, started on demand.

Where they come from, in order:
1. `SHELFCAST_TEST_KAFKA_BOOTSTRAP` / `SHELFCAST_TEST_DATABASE_URL`: use those servers as they are;
2. a reachable Docker engine: testcontainers (`apache/kafka:4.1.1` KRaft, `postgres:16`);
3. otherwise local processes: `LocalKafka` (Apache Kafka 4.1.1 from Maven Central jars) and
   `LocalPostgres` (PostgreSQL 16 from the `pgserver` wheel).
Session-scoped and lazy: only a run that requests a fixture pays for its server. Tests that use
any of these fixtures are marked `integration` automatically.
"""

from __future__ import annotations

import io
import os
import secrets
import tarfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from shelfcast.services import (
    EmbeddedTansu,
    LocalKafka,
    LocalPostgres,
    create_database,
    docker_available,
    drop_database,
    wait_kafka_ready,
)
from shelfcast.services.kafka_broker import SecureListener

KAFKA_IMAGE = "apache/kafka:4.1.1"
POSTGRES_IMAGE = "postgres:16"

INTEGRATION_FIXTURES = frozenset(
    {
        "kafka_bootstrap",
        "postgres_dsn",
        "pg_database",
        "restartable_kafka",
        "restartable_postgres",
        "secure_kafka",
        "tansu_bootstrap",
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that needs a real broker or database as `integration`."""
    for item in items:
        if INTEGRATION_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def unique_prefix() -> str:
    """A fresh topic/group name prefix such as `t3f9a1c2b7d0e.` (topic-name safe)."""
    return f"t{uuid.uuid4().hex[:12]}."


@pytest.fixture
def fresh_topic_prefix() -> str:
    """A per-test topic prefix so tests sharing one broker never see each other's records."""
    return unique_prefix()


# --------------------------------------------------------------------------- Kafka


def _start_kafka_container() -> Any:
    """apache/kafka in KRaft mode via testcontainers' generic container.

    `testcontainers.kafka.KafkaContainer` drives Confluent's cp-kafka scripts
    (/etc/confluent/docker/...), which the apache/kafka image does not have, so this follows
    testcontainers-java's recipe for apache/kafka instead: the container waits for a start
    script that sets the advertised listener to the mapped host port, then runs the image's
    own launcher.
    """
    from testcontainers.core.container import DockerContainer

    script = "/tmp/shelfcast-start.sh"
    container = (
        DockerContainer(KAFKA_IMAGE)
        .with_exposed_ports(9092)
        .with_envs(
            KAFKA_NODE_ID="1",
            KAFKA_PROCESS_ROLES="broker,controller",
            KAFKA_LISTENERS="PLAINTEXT://0.0.0.0:9092,BROKER://0.0.0.0:9093,"
            "CONTROLLER://0.0.0.0:9094",
            KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,"
            "CONTROLLER:PLAINTEXT",
            KAFKA_INTER_BROKER_LISTENER_NAME="BROKER",
            KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
            KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9094",
            KAFKA_NUM_PARTITIONS="4",
            KAFKA_AUTO_CREATE_TOPICS_ENABLE="true",
            KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
            KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR="1",
            KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
        )
        .with_command(["sh", "-c", f"while [ ! -f {script} ]; do sleep 0.1; done; sh {script}"])
    )
    container.start()
    try:
        host = container.get_container_host_ip()
        port = int(container.get_exposed_port(9092))
        body = (
            f"export KAFKA_ADVERTISED_LISTENERS=PLAINTEXT://{host}:{port},"
            "BROKER://$(hostname -i | cut -d' ' -f1):9093\n"
            "exec /etc/kafka/docker/run\n"
        ).encode()
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            info = tarfile.TarInfo(script.lstrip("/"))
            info.size, info.mode, info.mtime = len(body), 0o755, int(time.time())
            tar.addfile(info, io.BytesIO(body))
        container.get_wrapped_container().put_archive("/", archive.getvalue())
        wait_kafka_ready(f"{host}:{port}", 180.0, what=KAFKA_IMAGE)
    except BaseException:
        container.stop()
        raise
    container.bootstrap = f"{host}:{port}"
    return container


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a real Kafka broker shared by the whole session."""
    external = os.environ.get("SHELFCAST_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    if docker_available():
        container = _start_kafka_container()
        try:
            yield container.bootstrap
        finally:
            container.stop()
        return
    with LocalKafka() as kafka:
        yield kafka.bootstrap


@pytest.fixture
def restartable_kafka() -> Iterator[LocalKafka]:
    """A private local Kafka 4.x broker for this test, which it may stop/kill/restart."""
    with LocalKafka() as kafka:
        yield kafka


@dataclass(frozen=True)
class SecureKafka:
    """How to reach the SASL_SSL listener of `secure_kafka`."""

    bootstrap: str
    cafile: Path
    username: str
    password: str
    mechanism: str
    log_path: Path

    def settings_values(self) -> dict[str, Any]:
        """Settings fields for a client of this broker (SASL/SCRAM over verified TLS)."""
        return dict(
            kafka_bootstrap=self.bootstrap,
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism=self.mechanism,
            kafka_sasl_username=self.username,
            kafka_sasl_password=self.password,
            kafka_ssl_cafile=self.cafile,
        )


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    """A local Kafka 4.x broker whose client listener is SASL_SSL: a throw-away CA (trustme)
    signs its certificate for 127.0.0.1, and one SCRAM-SHA-512 user with a random password is
    written into its KRaft metadata at format time."""
    import trustme
    from cryptography.hazmat.primitives import serialization

    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    leaf = ca.issue_cert("127.0.0.1", "localhost", key_type=trustme.KeyType.RSA)
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    pkcs8 = key.private_bytes(  # Kafka's PEM key store reads PKCS#8 only
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    chain = "".join(pem.bytes().decode() for pem in leaf.cert_chain_pems)
    cafile = tmp_path_factory.mktemp("kafka-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    password = secrets.token_urlsafe(24)
    secure = SecureListener(keystore_pem=pkcs8 + chain, users={"shelfcast": password})
    with LocalKafka(secure=secure) as kafka:
        yield SecureKafka(
            bootstrap=kafka.secure_bootstrap,
            cafile=cafile,
            username="shelfcast",
            password=password,
            mechanism=secure.mechanism,
            log_path=kafka.log_path,
        )


@pytest.fixture(scope="session")
def tansu_bootstrap() -> Iterator[str]:
    """Bootstrap servers of the embedded tansu broker (the demo's broker)."""
    with EmbeddedTansu() as tansu:
        yield tansu.bootstrap


# --------------------------------------------------------------------------- PostgreSQL


def _start_postgres_container() -> Any:
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # older testcontainers
        from testcontainers.postgres import PostgresContainer

    container = PostgresContainer(POSTGRES_IMAGE, driver=None)
    container.start()
    return container


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """DSN (`postgresql://...`, asyncpg-ready) of a real PostgreSQL server's default database."""
    external = os.environ.get("SHELFCAST_TEST_DATABASE_URL")
    if external:
        yield external
        return
    if docker_available():
        container = _start_postgres_container()
        try:
            yield container.get_connection_url(driver=None)
        finally:
            container.stop()
        return
    with LocalPostgres() as pg:
        yield pg.dsn


@pytest_asyncio.fixture(loop_scope="session")
async def pg_database(postgres_dsn: str) -> AsyncIterator[str]:
    """A fresh, empty database for this test (dropped afterwards); returns its DSN."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    dsn = await create_database(postgres_dsn, name)
    try:
        yield dsn
    finally:
        await drop_database(postgres_dsn, name)


@pytest.fixture
def restartable_postgres() -> Iterator[LocalPostgres]:
    """A private local PostgreSQL for this test, which it may stop/kill/restart."""
    with LocalPostgres() as pg:
        yield pg


__all__ = ["SecureKafka", "unique_prefix"]
