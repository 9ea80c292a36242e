"""Consumer-group lag of the stream workers on their input topics (for catch-up checks)."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

from aiokafka import AIOKafkaConsumer, TopicPartition

from runtime.kafka_config import client_kwargs
from runtime.settings import Settings

__all__ = ["LagProbe"]


class LagProbe:
    """Reads the worker group's committed offsets and the input topics' end offsets.

    Uses a consumer carrying the group id that never subscribes, so it does not join the
    group (OffsetFetch only); the admin API's OffsetFetch is missing on some brokers (tansu).
    """

    def __init__(self, settings: Settings, group_id: str | None = None) -> None:
        self._consumer = AIOKafkaConsumer(**client_kwargs(settings),
                                          group_id=group_id or settings.app_id,
                                          enable_auto_commit=False)
        self._parts = [TopicPartition(t, p) for t in settings.topics.inputs()
                       for p in range(settings.topic_partitions)]

    async def __aenter__(self) -> Self:
        await self._consumer.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self._consumer.stop()

    async def lag(self) -> int:
        """Records on the input topics not yet committed by the worker group."""
        ends = await self._consumer.end_offsets(self._parts)
        committed = await asyncio.gather(*(self._consumer.committed(tp) for tp in ends))
        # clamp per partition: some brokers (tansu) answer a short "latest" offset
        return sum(max(0, end - (c or 0)) for end, c in zip(ends.values(), committed, strict=True))
