"""Topic creation: every contract topic up front, and the changelog when a worker starts.

`create_topics` is the one place that talks to the admin API; `ensure_topics` asks it for the
contract topics (configured partition count, catalog and calendar compacted),
`streams.changelog` for the SKU-state changelog (compacted, as many partitions as the
inputs).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from runtime.errors import ConfigError
from runtime.kafka_config import client_kwargs
from runtime.settings import Settings

__all__ = ["TopicSpec", "create_topics", "ensure_topics", "topic_partitions"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    """A topic to create when missing; a compacted one keeps the last record per key."""

    name: str
    partitions: int
    compacted: bool = False


async def create_topics(settings: Settings, specs: Sequence[TopicSpec], *,
                        timeout_s: float = 30.0) -> list[str]:
    """Create those of `specs` that do not exist yet; returns the names that were created.

    Retries reaching the broker for up to `timeout_s` (workers may start before it is up).
    Another worker creating the same topic meanwhile is no error.
    """
    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=10_000)
    deadline_s = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            await admin.start()
            break
        except KafkaError:
            if asyncio.get_running_loop().time() > deadline_s:
                raise
            await asyncio.sleep(0.5)
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(name=spec.name, num_partitions=spec.partitions,
                     replication_factor=settings.topic_replication,
                     topic_configs={"cleanup.policy": "compact"} if spec.compacted else {})
            for spec in specs
            if spec.name not in existing
        ]
        if not wanted:
            return []
        try:
            await admin.create_topics(wanted, timeout_ms=int(timeout_s * 1000))
        except TopicAlreadyExistsError:  # another worker won the race
            pass
        created = [t.name for t in wanted]
        log.info("created topics %s", created)
        return created
    finally:
        await admin.close()


async def ensure_topics(settings: Settings, *, timeout_s: float = 30.0) -> list[str]:
    """Create missing contract topics (catalog and calendar compacted: the last record per key
    is what a worker reads at start); returns the names that were created."""
    topics = settings.topics
    kept = {topics.catalog, topics.calendar}
    specs = [TopicSpec(name, settings.topic_partitions, compacted=name in kept)
             for name in topics.all()]
    return await create_topics(settings, specs, timeout_s=timeout_s)


async def topic_partitions(settings: Settings, topic: str) -> list[int]:
    """The partition numbers of `topic` as the broker describes it (a one-line ConfigError
    when it cannot be read: a missing topic, no access)."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if described.get("error_code"):
        raise ConfigError(f"cannot read topic {topic!r} (error code {described['error_code']})")
    return [p["partition"] for p in described["partitions"]]
