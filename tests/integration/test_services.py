"""Integration checks of the test infrastructure: real Kafka 4.x, PostgreSQL and tansu servers."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from schemas import sku_key
from shelfcast.services import EmbeddedTansu, LocalKafka, LocalPostgres


async def _create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name=topic, num_partitions=partitions, replication_factor=1)]
        )
        errors = [(t, code, msg) for t, code, msg in response.topic_errors if code != 0]
        assert not errors, errors
        for _ in range(50):  # metadata propagates asynchronously
            described = await admin.describe_topics([topic])
            if described and described[0]["error_code"] == 0:
                break
            await asyncio.sleep(0.1)
        assert described[0]["error_code"] == 0, described
        assert len(described[0]["partitions"]) == partitions
    finally:
        await admin.close()


async def _round_trip(bootstrap: str, topic: str, count: int = 10) -> list[tuple[bytes, bytes]]:
    """Produce `count` keyed records and read them all back from the beginning."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sent = [(sku_key(f"sku-{i}", "loc-1").encode(), f'{{"n": {i}}}'.encode())
                for i in range(count)]
        for key, value in sent:
            await producer.send(topic, value=value, key=key)
        await producer.flush()
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"{topic}.check",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received: list[tuple[bytes, bytes]] = []
    try:
        async with asyncio.timeout(60):
            while len(received) < count:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    received += [(r.key, r.value) for r in records]
    finally:
        await consumer.stop()
    assert sorted(received) == sorted(sent)
    return received


async def test_kafka_admin_creates_topic_with_partitions(
    kafka_bootstrap: str, fresh_topic_prefix: str
) -> None:
    await _create_topic(kafka_bootstrap, f"{fresh_topic_prefix}orders", partitions=4)


async def test_kafka_produce_consume_round_trip(
    kafka_bootstrap: str, fresh_topic_prefix: str
) -> None:
    topic = f"{fresh_topic_prefix}round-trip"
    await _create_topic(kafka_bootstrap, topic, partitions=4)
    await _round_trip(kafka_bootstrap, topic)


async def test_kafka_auto_creates_topic_with_default_partitions(
    kafka_bootstrap: str, fresh_topic_prefix: str
) -> None:
    topic = f"{fresh_topic_prefix}auto"
    await _round_trip(kafka_bootstrap, topic, count=3)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert described["error_code"] == 0
    assert len(described["partitions"]) == 4  # the broker's num.partitions


async def test_local_kafka_keeps_data_across_restart_and_crash(
    restartable_kafka: LocalKafka, fresh_topic_prefix: str
) -> None:
    kafka = restartable_kafka
    bootstrap = kafka.bootstrap
    topic = f"{fresh_topic_prefix}durable"
    await _create_topic(bootstrap, topic, partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"before", key=b"k", partition=0)
    finally:
        await producer.stop()

    await asyncio.to_thread(kafka.restart)
    assert kafka.bootstrap == bootstrap
    await asyncio.to_thread(kafka.kill)
    assert not kafka.running
    await asyncio.to_thread(kafka.start)

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        record = await asyncio.wait_for(consumer.getone(), 30)
    finally:
        await consumer.stop()
    assert record.value == b"before"


async def test_postgres_create_insert_select(pg_database: str) -> None:
    conn = await asyncpg.connect(pg_database)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        await conn.execute(
            "CREATE TABLE plans (id uuid PRIMARY KEY, supplier text NOT NULL, qty int NOT NULL)"
        )
        rows = [(uuid.uuid4(), f"sup-{i % 3}", i) for i in range(100)]
        await conn.executemany("INSERT INTO plans VALUES ($1, $2, $3)", rows)
        total = await conn.fetchval("SELECT sum(qty) FROM plans WHERE supplier = 'sup-0'")
        assert total == sum(q for _, s, q in rows if s == "sup-0")
        version = await conn.fetchval("SHOW server_version_num")
        assert int(version) >= 160000
    finally:
        await conn.close()


async def test_pg_database_is_fresh_per_test(pg_database: str) -> None:
    conn = await asyncpg.connect(pg_database)
    try:
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    assert tables == []


async def test_local_postgres_restart_and_crash_keep_data(
    restartable_postgres: LocalPostgres,
) -> None:
    pg = restartable_postgres
    dsn = pg.create_database("chaos")
    conn = await asyncpg.connect(dsn)
    await conn.execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1), (2)")
    await conn.close()

    await asyncio.to_thread(pg.restart)
    await asyncio.to_thread(pg.kill)
    with pytest.raises(OSError):
        await asyncpg.connect(dsn, timeout=2)
    await asyncio.to_thread(pg.start)

    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT sum(v) FROM t") == 3
    finally:
        await conn.close()


async def test_tansu_round_trip(tansu_bootstrap: str, fresh_topic_prefix: str) -> None:
    topic = f"{fresh_topic_prefix}tansu"
    await _create_topic(tansu_bootstrap, topic, partitions=4)
    await _round_trip(tansu_bootstrap, topic, count=5)


@pytest.mark.integration
def test_embedded_tansu_lifecycle() -> None:
    with EmbeddedTansu() as tansu:
        assert tansu.running
        assert tansu.bootstrap.startswith("127.0.0.1:")
        pid = tansu.pid
    assert not tansu.running
    assert pid is not None
