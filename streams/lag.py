"""Consumer-group lag of the stream workers on their input topics (for catch-up checks)."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from shelfcast.kafka_config import client_kwargs
from shelfcast.settings import Settings

__all__ = ["input_lag"]


async def input_lag(settings: Settings, group_id: str | None = None) -> int:
    """Records on the input topics not yet committed by the worker group (all partitions)."""
    kwargs = client_kwargs(settings)
    admin = AIOKafkaAdminClient(**kwargs)
    consumer = AIOKafkaConsumer(**kwargs, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group_id or settings.app_id)
        parts = [TopicPartition(t, p) for t in settings.topics.inputs()
                 for p in range(settings.topic_partitions)]
        ends = await consumer.end_offsets(parts)
        lag = 0
        for tp, end in ends.items():
            meta = committed.get(tp)
            lag += end - (meta.offset if meta is not None and meta.offset >= 0 else 0)
        return lag
    finally:
        await consumer.stop()
        await admin.close()
