"""Local infrastructure for tests and the demo: Kafka 4.x, PostgreSQL, tansu, Docker probe."""

from shelfcast.services.docker_probe import docker_available
from shelfcast.services.kafka_broker import (
    KAFKA_VERSION,
    BrokerStartError,
    LocalKafka,
    ensure_kafka_jars,
    free_port,
    kafka_ready,
    wait_kafka_ready,
)
from shelfcast.services.postgres_server import (
    LocalPostgres,
    PostgresStartError,
    create_database,
    drop_database,
    dsn_with_database,
)
from shelfcast.services.tansu_broker import EmbeddedTansu, tansu_binary

__all__ = [
    "KAFKA_VERSION",
    "BrokerStartError",
    "EmbeddedTansu",
    "LocalKafka",
    "LocalPostgres",
    "PostgresStartError",
    "create_database",
    "docker_available",
    "drop_database",
    "dsn_with_database",
    "ensure_kafka_jars",
    "free_port",
    "kafka_ready",
    "tansu_binary",
    "wait_kafka_ready",
]
