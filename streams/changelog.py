"""The SKU-state changelog of the batch engine: topic, record codec and partition recovery.

One compacted topic with as many partitions as the input topics. A batch writes one record
per dirty key (key `sku@location`, value the state as compact JSON) to the partition of the
input record it came from (not the partition the key hashes to: the shop's producer may use
any partitioner), so the state of input partition p lives in changelog partition p and moves
with it on a rebalance: the new owner reads that partition from the beginning to its end
offset into p's table.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

import msgspec
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from runtime.kafka_config import client_kwargs
from runtime.kafka_lifecycle import stop_client
from runtime.settings import Settings
from streams.store import StateStore
from streams.topics import TopicSpec, create_topics

__all__ = [
    "changelog_topic",
    "decode_state",
    "encode_state",
    "ensure_changelog",
    "recover_partitions",
]

log = logging.getLogger(__name__)


def changelog_topic(settings: Settings) -> str:
    """`<app_id>-sku-state-changelog`: one per consumer group, like Faust's table changelogs."""
    return f"{settings.app_id}-sku-state-changelog"


def encode_state(value: Any) -> bytes | None:
    """A state (`SkuState` or its JSON dict) as compact JSON; None stays a tombstone.

    msgspec writes the dataclass directly, its int bucket keys as strings: exactly
    `SkuState.to_json()`. (orjson wrote the same bytes at 2-3x the CPU here: one record per
    key per batch, this was a tenth of a worker's time; floats may differ in spelling only,
    `1e17` for `1e+17`, and read back to the same value.)
    """
    if value is None:
        return None
    return _encode(value)


_encode = msgspec.json.Encoder().encode


def decode_state(raw: bytes | None) -> Any:
    return None if raw is None else orjson.loads(raw)


async def ensure_changelog(settings: Settings, partitions: int) -> None:
    """Create the changelog topic (compacted) with `partitions` partitions if it is missing."""
    await create_topics(settings, [TopicSpec(changelog_topic(settings), partitions,
                                             compacted=True)])


async def recover_partitions(settings: Settings, partitions: Iterable[int],
                             store: StateStore, *, settle_ms: int = 200) -> int:
    """Load changelog partitions into `store`, from the beginning to the end; returns records.

    Reads to the end offsets, then on until a fetch comes back empty for `settle_ms`: some
    brokers (tansu) answer a "latest" offset short of the real end, and stopping there would
    lose the newest state.
    """
    tps = [TopicPartition(changelog_topic(settings), p) for p in sorted(set(partitions))]
    if not tps:
        return 0
    consumer = AIOKafkaConsumer(**client_kwargs(settings), group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
    await consumer.start()
    t0 = time.perf_counter()
    n = 0
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        todo = {tp for tp, end in ends.items() if end > 0}
        idle_since = time.monotonic()
        while True:
            batch = await consumer.getmany(*tps, timeout_ms=settle_ms if not todo else 500,
                                           max_records=50_000)
            for records in batch.values():
                for r in records:
                    if r.key is not None:  # a record without key cannot be state
                        store.load(r.partition, r.key.decode(), decode_state(r.value))
                n += len(records)
            if batch:
                idle_since = time.monotonic()
            elif not todo:
                break
            # position, not the last record's offset: compaction leaves gaps
            todo = {tp for tp in todo if await consumer.position(tp) < ends[tp]}
            if todo and time.monotonic() - idle_since > 30:
                raise RuntimeError(f"changelog recovery stalled short of the end on {todo}")
    finally:
        await stop_client(consumer)  # a broker outage must not fail the rebalance callback
    log.info("recovered %d changelog record(s) of partitions %s in %.2f s (%d keys held)",
             n, [tp.partition for tp in tps], time.perf_counter() - t0, len(store))
    await asyncio.sleep(0)
    return n
