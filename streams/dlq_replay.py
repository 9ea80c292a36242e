"""Replay dead-lettered records to their source topics once the cause is fixed.

A consumer group of its own (`<app_id>-dlq-replay`) remembers how far replays got, so running
the command twice does not send a record twice; the stream dedupes by event id in any case.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from runtime.kafka_config import client_kwargs
from runtime.settings import Settings
from schemas import DeadLetter
from streams.topics import topic_partitions

__all__ = ["ReplayResult", "replay_dead_letters"]


@dataclass
class ReplayResult:
    scanned: int = 0
    replayed: int = 0
    skipped: int = 0  # not of the kinds asked for, or not a dead letter
    cut: int = 0  # of the kinds asked for, but only a prefix of the payload or key was kept
    by_topic: dict[str, int] = field(default_factory=dict)


def _replay_one(value: bytes | None, kinds: set[str] | None, result: ReplayResult
                ) -> tuple[str, bytes | None, bytes] | None:
    """Count one DLQ record; its (topic, key, payload) if it is to go back."""
    try:
        dead = DeadLetter.model_validate_json(value or b"")
    except ValidationError:
        result.skipped += 1
        return None
    if kinds and dead.error_kind not in kinds:
        result.skipped += 1
        return None
    if dead.cut:  # sending a prefix back would be a different record
        result.cut += 1
        return None
    result.replayed += 1
    result.by_topic[dead.source_topic] = result.by_topic.get(dead.source_topic, 0) + 1
    key = dead.key.encode() if dead.key is not None else None
    return dead.source_topic, key, base64.b64decode(dead.raw_payload_b64)


async def replay_dead_letters(settings: Settings, *, kinds: set[str] | None = None,
                              dry_run: bool = False, limit: int | None = None) -> ReplayResult:
    """Send the raw payload of each dead letter (optionally only of `kinds`) back to its source
    topic with its original key, up to the DLQ's end as of the start of the call.

    A dead letter that kept only the first bytes of its payload (or key) cannot be replayed:
    it is counted in `cut`, not sent (its source topic still holds the record, at the offset
    it names, and `payload_sha256` identifies it). `limit`: scan at most that many dead
    letters; the next run goes on from there."""
    kwargs = client_kwargs(settings)
    consumer = AIOKafkaConsumer(**kwargs, group_id=f"{settings.app_id}-dlq-replay",
                                enable_auto_commit=False, auto_offset_reset="earliest")
    producer = AIOKafkaProducer(**kwargs, acks="all")
    result = ReplayResult()
    await consumer.start()
    await producer.start()
    try:
        numbers = await topic_partitions(settings, settings.topics.dlq)
        parts = [TopicPartition(settings.topics.dlq, p) for p in sorted(numbers)]
        consumer.assign(parts)  # no group join: the group id only keeps our offsets
        for tp in parts:
            committed = await consumer.committed(tp)
            if committed is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, committed)
        ends = await consumer.end_offsets(parts)
        remaining = {tp: end for tp, end in ends.items()
                     if (await consumer.position(tp)) < end}
        done: dict[TopicPartition, int] = {}  # next offset to read, per partition scanned
        full = False
        while remaining and not full:
            batch = await consumer.getmany(*remaining, timeout_ms=1000, max_records=1000)
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= remaining.get(tp, 0):
                        continue
                    if limit is not None and result.scanned >= limit:
                        full = True  # at most `limit`: the rest waits for the next run
                        break
                    result.scanned += 1
                    done[tp] = record.offset + 1
                    send = _replay_one(record.value, kinds, result)
                    if send is not None and not dry_run:
                        await producer.send(send[0], key=send[1], value=send[2])
                if full:
                    break
            for tp in list(remaining):
                if await consumer.position(tp) >= remaining[tp]:
                    del remaining[tp]
        await producer.flush()
        if not dry_run and done:
            await consumer.commit(done)  # what was scanned, not what was fetched
    finally:
        await producer.stop()
        await consumer.stop()
    return result
