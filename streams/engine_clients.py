"""The batch engine's Kafka edge: the clients it talks through, as a small protocol.

`BatchEngine` reaches Kafka only through an `EngineClients`: a producer (outputs and the
changelog), a group consumer (inputs, offset commits), changelog topic creation and changelog
recovery. `KafkaClients` is the real one (aiokafka); a test passes its own to watch what the
engine sends and commits, and in which order, without a broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from runtime.kafka_config import client_kwargs
from runtime.settings import Settings
from streams.changelog import ensure_changelog, recover_partitions
from streams.dead_letters import topic_max_message_bytes
from streams.store import StateStore

__all__ = ["EngineClients", "EngineConsumer", "EngineProducer", "KafkaClients", "RecordBatch"]


class RecordBatch(Protocol):
    """A record batch under construction (aiokafka's `BatchBuilder`)."""

    def append(self, *, key: bytes | None, value: bytes | None, timestamp: int | None
               ) -> Any | None: ...  # None: the batch is full

    def record_count(self) -> int: ...


class EngineProducer(Protocol):
    """What the engine asks of a producer: partition counts and whole record batches."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def partitions_for(self, topic: str) -> set[int]: ...

    def create_batch(self) -> RecordBatch: ...

    async def send_batch(self, batch: RecordBatch, topic: str, *, partition: int
                         ) -> asyncio.Future[Any]: ...  # done once the broker acknowledged


class EngineConsumer(Protocol):
    """What the engine asks of a group consumer: whole fetches, positions, commits."""

    def subscribe(self, *, topics: Iterable[str], listener: ConsumerRebalanceListener) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def getmany(self, *, timeout_ms: int, max_records: int
                      ) -> dict[TopicPartition, list[Any]]: ...

    def assignment(self) -> set[TopicPartition]: ...

    def seek(self, partition: TopicPartition, offset: int) -> None: ...

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None: ...


class EngineClients(Protocol):
    """Everything the engine needs from Kafka."""

    def producer(self) -> EngineProducer: ...

    def consumer(self) -> EngineConsumer: ...

    async def ensure_changelog(self, partitions: int) -> None: ...

    async def recover(self, partitions: set[int], store: StateStore) -> int: ...

    async def topic_max_message_bytes(self, topic: str) -> int | None:
        """The topic's effective `max.message.bytes` (None if the broker does not say)."""
        ...


@dataclass(frozen=True)
class KafkaClients:
    """The real clients: aiokafka, tuned for whole fetches and per-partition record batches."""

    settings: Settings

    def producer(self) -> EngineProducer:
        s = self.settings
        producer: EngineProducer = AIOKafkaProducer(
            # record batches are built here, per partition: up to 1 MiB each (the default 16 KiB
            # cut a batch's forecasts into hundreds of produce requests, each acknowledged)
            **client_kwargs(s), acks="all", linger_ms=0, max_batch_size=1 << 20,
            max_request_size=8 << 20, request_timeout_ms=s.kafka_request_timeout_ms)
        return producer

    def consumer(self) -> EngineConsumer:
        s = self.settings
        session_ms = int(s.kafka_session_timeout_s * 1000)
        consumer: EngineConsumer = AIOKafkaConsumer(
            **client_kwargs(s), group_id=s.app_id, enable_auto_commit=False,
            auto_offset_reset="earliest",
            partition_assignment_strategy=(RangePartitionAssignor,),
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=min(3000, session_ms // 3),
            max_poll_interval_ms=300_000,
            max_partition_fetch_bytes=4 << 20, fetch_max_bytes=64 << 20,
            fetch_max_wait_ms=max(1, min(100, int(s.take_within_ms))))
        return consumer

    async def ensure_changelog(self, partitions: int) -> None:
        await ensure_changelog(self.settings, partitions)

    async def recover(self, partitions: set[int], store: StateStore) -> int:
        return await recover_partitions(self.settings, partitions, store)

    async def topic_max_message_bytes(self, topic: str) -> int | None:
        return await topic_max_message_bytes(self.settings, topic)
