"""Kafka helpers for tests on a real broker: produce records, read a topic back, wait for lag,
and an isolated set of topics for one test."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from runtime.kafka_config import client_kwargs
from runtime.settings import Settings
from streams.lag import LagProbe
from streams.topics import TopicSpec, create_topics

Key = bytes | str | None


async def produce(settings: Settings, topic: str, records: Iterable[tuple[Key, bytes]]) -> None:
    """Send (key, value) pairs in order and wait until every one is acknowledged."""
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all", linger_ms=5)
    await producer.start()
    try:
        for key, value in records:
            await producer.send(topic, key=key.encode() if isinstance(key, str) else key,
                                value=value)
        await producer.flush()
    finally:
        await producer.stop()


async def read_all(settings: Settings, topic: str) -> list:
    """Every record of `topic` from the beginning, until a fetch comes back empty for 1.5 s."""
    consumer = AIOKafkaConsumer(topic, **client_kwargs(settings), group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    out = []
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=1500)
            if not batch:
                return out
            for records in batch.values():
                out.extend(records)
    finally:
        await consumer.stop()


async def read_expected(settings: Settings, topic: str, expected: int,
                        timeout_s: float = 20.0) -> list:
    """Every record of `topic` from the beginning (waits until `expected` arrived or timeout),
    then a second more, so that a surplus (a duplicate) would be seen too."""
    consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await consumer._client.fetch_all_metadata()
        tps = [TopicPartition(topic, p) for p in partitions.partitions_for_topic(topic) or []]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list = []
        deadline_s = asyncio.get_running_loop().time() + timeout_s
        while len(records) < expected and asyncio.get_running_loop().time() < deadline_s:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
        for batch in (await consumer.getmany(timeout_ms=1000)).values():
            records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def wait_lag(probe: LagProbe, below: int, timeout_s: float) -> int:
    """Poll the consumer group's lag until it is at most `below`; fail after `timeout_s`."""
    deadline_s = time.monotonic() + timeout_s
    while time.monotonic() < deadline_s:
        lag = await probe.lag()
        if lag <= below:
            return lag
        await asyncio.sleep(0.05)
    raise AssertionError(f"lag still above {below} after {timeout_s} s")


def isolated_settings(kafka_bootstrap: str) -> Settings:
    """Settings whose topics and consumer groups no other test shares."""
    run = uuid.uuid4().hex[:12]
    return Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"t{run}.",
                    shop_topic_prefix=f"t{run}.shop.", app_id=f"test-{run}")


async def create_optimizer_topics(settings: Settings) -> None:
    """The optimizer's topics: restock (3 partitions), demand (3), plans (2), alerts (1),
    DLQ (1)."""
    topics = settings.topics
    await create_topics(settings, [TopicSpec(topics.restock, 3), TopicSpec(topics.demand, 3),
                                   TopicSpec(topics.plans, 2), TopicSpec(topics.alerts, 1),
                                   TopicSpec(topics.dlq, 1)])
