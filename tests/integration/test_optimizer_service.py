"""OptimizerService end to end on a real Kafka broker and a real PostgreSQL."""

import asyncio
import base64
import uuid
from datetime import UTC, datetime
from functools import partial

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from optimizer import OptimizerService, PlanStore
from runtime.backoff import Backoff
from runtime.settings import Settings
from schemas import DeadLetter, PlanEvent, encode, sku_key
from tests.factories import make_restock

pytestmark = pytest.mark.asyncio(loop_scope="session")


restock = partial(make_restock, unit_cost=1.5)


def make_settings(kafka_bootstrap: str) -> Settings:
    run = uuid.uuid4().hex[:12]
    return Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"t{run}.", app_id=f"test-{run}")


async def create_topics(settings: Settings, bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(settings.topics.restock, num_partitions=3, replication_factor=1),
                NewTopic(settings.topics.plans, num_partitions=2, replication_factor=1),
                NewTopic(settings.topics.dlq, num_partitions=1, replication_factor=1),
            ]
        )
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, records: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, key=key.encode(), value=value)
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 20.0) -> list:
    """Every record of `topic` from the beginning (waits until `expected` arrived or timeout)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await consumer._client.fetch_all_metadata()
        tps = [TopicPartition(topic, p) for p in partitions.partitions_for_topic(topic) or []]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list = []
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(records) < expected and asyncio.get_running_loop().time() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
        # A little longer, so that a surplus (a duplicate) would be seen too.
        for batch in (await consumer.getmany(timeout_ms=1000)).values():
            records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def test_service_end_to_end_plans_each_restock_once(kafka_bootstrap, pg_database):
    settings = make_settings(kafka_bootstrap)
    await create_topics(settings, kafka_bootstrap)
    restocks = [
        restock(
            f"r{i:02d}",
            sku=f"sku-{i}",
            location=f"loc{i % 3}",
            supplier=f"sup{i % 2}",
            quantity=i + 1,
        )
        for i in range(24)
    ]
    records = [(sku_key(r.sku, r.location), encode(r)) for r in restocks]
    records.insert(10, records[3])  # a redelivered restock
    records.insert(5, ("bad@loc0", b'{"restock_id": "broken'))  # a malformed record
    await produce(kafka_bootstrap, settings.topics.restock, records)

    service = OptimizerService(settings, pg_database, max_records=7)
    counters = await service.run_until_idle(2.0)
    assert counters.restocks_in == 25  # 24 + the duplicate; the malformed one is not a restock
    assert counters.dlq == 1
    assert counters.plan_lines_written == 24

    conn = await asyncpg.connect(pg_database)
    try:
        rows = await conn.fetch("SELECT restock_id, count(*) AS n FROM plan_lines GROUP BY 1")
        assert {r["restock_id"]: r["n"] for r in rows} == {r.restock_id: 1 for r in restocks}
        assert await conn.fetchval("SELECT count(*) FROM restock_events") == 24
        assert (
            await conn.fetchval("SELECT count(*) FROM purchase_plans WHERE published_at IS NULL")
            == 0
        )
        offsets = await conn.fetch(
            "SELECT partition, next_offset FROM consumer_offsets"
            " WHERE group_id = $1 AND topic = $2",
            service.group_id,
            settings.topics.restock,
        )
        assert sum(r["next_offset"] for r in offsets) == len(records)
        db_plans = await conn.fetchval("SELECT count(*) FROM purchase_plans")
    finally:
        await conn.close()
    assert counters.plans_out == db_plans

    published = await read_all(kafka_bootstrap, settings.topics.plans, db_plans)
    plans = [PlanEvent.model_validate_json(rec.value) for rec in published]
    assert len(plans) == db_plans
    assert all(
        rec.key.decode() == plan.supplier for rec, plan in zip(published, plans, strict=True)
    )
    lines = [line.restock_id for plan in plans for line in plan.lines]
    assert sorted(lines) == sorted(r.restock_id for r in restocks)  # each exactly once
    assert all(p.total_units == sum(line.quantity for line in p.lines) for p in plans)

    dead = await read_all(kafka_bootstrap, settings.topics.dlq, 1)
    assert len(dead) == 1
    letter = DeadLetter.model_validate_json(dead[0].value)
    assert letter.source_topic == settings.topics.restock
    assert letter.key == "bad@loc0" and letter.error_kind == "invalid_json" and letter.error
    assert base64.b64decode(letter.raw_payload_b64) == b'{"restock_id": "broken'

    # A restart resumes from the offsets in PostgreSQL; a late redelivery plans nothing.
    await produce(kafka_bootstrap, settings.topics.restock, [records[0]])
    again = await OptimizerService(settings, pg_database).run_until_idle(2.0)
    assert again.restocks_in == 1 and again.plans_out == 0 and again.plan_lines_written == 0
    async with await PlanStore.connect(pg_database) as store:
        assert await store.count_plan_lines() == 24


async def test_service_seeks_to_offsets_stored_in_postgres(kafka_bootstrap, pg_database):
    settings = make_settings(kafka_bootstrap)
    await create_topics(settings, kafka_bootstrap)
    old = restock("old", sku="sku-old", location="loc0", supplier="s", quantity=1)
    new = restock("new", sku="sku-new", location="loc0", supplier="s", quantity=2)
    # Same key: same partition, "old" at offset 0 and "new" at offset 1.
    same_key = [("k@loc0", encode(old)), ("k@loc0", encode(new))]
    await produce(kafka_bootstrap, settings.topics.restock, same_key)
    service = OptimizerService(settings, pg_database)
    async with await PlanStore.connect(pg_database) as store:
        await store.migrate()
        partition = (await read_all(kafka_bootstrap, settings.topics.restock, 2))[0].partition
        # PostgreSQL says offset 0 was consumed; Kafka has no commit for this group.
        stored = {(settings.topics.restock, partition): 1}
        await store.write_batch([], [], stored, service.group_id)
        counters = await service.run_until_idle(2.0)
        assert counters.restocks_in == 1
        assert await store.count_plan_lines() == 1
        assert await store.count_restock_events() == 1  # "old" was never read


async def test_publishes_plans_left_in_the_outbox_on_start(kafka_bootstrap, pg_database):
    settings = make_settings(kafka_bootstrap)
    await create_topics(settings, kafka_bootstrap)
    from optimizer import consolidate

    batch = [restock("x1", sku="a", location="l", supplier="s", quantity=3)]
    async with await PlanStore.connect(pg_database) as store:
        await store.migrate()
        # As if the worker died after the commit and before publishing.
        (plan,) = await store.write_batch(batch, consolidate(batch, datetime.now(UTC)), {}, "g")
        await OptimizerService(settings, pg_database).run_until_idle(1.0)
        assert await store.unpublished_plans() == []
    (record,) = await read_all(kafka_bootstrap, settings.topics.plans, 1)
    assert PlanEvent.model_validate_json(record.value) == plan


async def test_db_write_retries_then_gives_up(kafka_bootstrap, restartable_postgres):
    from optimizer import StoreUnavailable

    settings = make_settings(kafka_bootstrap)
    await create_topics(settings, kafka_bootstrap)
    item = restock("y1", sku="a", location="l", supplier="s", quantity=3)
    await produce(kafka_bootstrap, settings.topics.restock, [(sku_key("a", "l"), encode(item))])
    service = OptimizerService(
        settings, restartable_postgres.dsn,
        retry=Backoff(base_delay_s=0.05, max_delay_s=10.0, max_attempts=3),
    )
    await service.start()
    try:
        restartable_postgres.stop()
        with pytest.raises(StoreUnavailable) as info:
            for _ in range(100):
                await service.process_once()
        assert info.value.attempts == 3
        assert service.counters.db_retries == 2
    finally:
        await service.stop()
        restartable_postgres.start()
    # Back up: a new worker picks the batch up again and plans it once.
    counters = await OptimizerService(settings, restartable_postgres.dsn).run_until_idle(1.5)
    assert counters.plan_lines_written == 1
