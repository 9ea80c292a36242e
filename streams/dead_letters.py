"""Dead letters that always fit: the payload size the DLQ topic has room for, and the reduced
form of a record the broker refused.

A refused input is dead-lettered with its raw bytes in base64 (4/3 of their size) plus an
envelope, so a record just under the input topic's `max.message.bytes` makes a dead letter
over the DLQ topic's: sent whole it would be refused, and retried, for ever. The worker reads
the DLQ topic's real `max.message.bytes` at start and cuts dead letters' payloads to what fits
(`SHELFCAST_DLQ_PAYLOAD_BYTES` at most), keeping the full length and SHA-256; a record the
broker still refuses (its topic's limit lowered meanwhile, an output too large) is sent again
in reduced form (`REDUCED_PAYLOAD_BYTES`), never retried as it was.
"""

from __future__ import annotations

import base64
import logging

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from pydantic import ValidationError

from runtime.kafka_config import client_kwargs
from runtime.settings import Settings
from schemas import DeadLetter, InvalidEvent, dead_letter, dead_letter_bytes

__all__ = [
    "RECORD_REFUSED",
    "REDUCED_PAYLOAD_BYTES",
    "describe",
    "fitting_payload_bytes",
    "reduced_dead_letter",
    "topic_max_message_bytes",
]

log = logging.getLogger(__name__)

# Errors the broker answers because of the record itself (its size, its topic's name, its
# bytes): sending it again cannot succeed. Every other send error (an unreachable broker, a
# timeout, a missing ACL an operator can fix) holds the batch and is retried.
RECORD_REFUSED: tuple[type[KafkaError], ...] = (
    MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError, InvalidTopicError,
    CorruptRecordException)

# What a refused record keeps of its payload when it is dead-lettered again: enough to read
# what it was, small enough for any topic.
REDUCED_PAYLOAD_BYTES = 1024


def fitting_payload_bytes(max_message_bytes: int, wanted: int) -> int:
    """The largest payload cut, at most `wanted`, whose dead letter fits `max_message_bytes`."""
    fixed = dead_letter_bytes(0)
    room = max(0, (max_message_bytes - fixed) // 4 * 3)
    return min(wanted, room)


async def topic_max_message_bytes(settings: Settings, topic: str) -> int | None:
    """The topic's effective `max.message.bytes` as the broker reports it; None if unknown."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=10_000)
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": ""})])
    except KafkaError as exc:
        log.warning("cannot read max.message.bytes of %s (%s)", topic, exc)
        return None
    finally:
        await admin.close()
    for response in responses:
        for resource in response.resources:
            # (error_code, error_message, resource_type, resource_name, config_entries)
            error_code, entries = resource[0], resource[4]
            if error_code:
                return None
            for entry in entries:
                if entry[0] == "max.message.bytes" and entry[1] is not None:
                    return int(entry[1])
    return None


def reduced_dead_letter(topic: str, partition: int, key: bytes | None, value: bytes | None,
                        error: KafkaError, dlq_topic: str) -> DeadLetter:
    """The dead letter for a record the broker refused on `topic`/`partition`.

    A refused dead letter keeps its source position, reason and kind, and its payload cut
    to REDUCED_PAYLOAD_BYTES (an already cut one keeps the full length and hash it had).
    Any other output becomes a dead letter of kind `unsendable` with offset -1 (it was made
    by the worker, not read from a topic) and its first REDUCED_PAYLOAD_BYTES bytes.
    """
    if topic == dlq_topic and value is not None:
        try:
            dead = DeadLetter.model_validate_json(value)
        except ValidationError:
            dead = None
        if dead is not None:
            raw = base64.b64decode(dead.raw_payload_b64)
            cut = dead_letter(topic=dead.source_topic, partition=dead.partition,
                              offset=dead.offset, key=dead.key, raw=raw,
                              error=InvalidEvent(dead.error, kind=dead.error_kind),
                              max_payload_bytes=REDUCED_PAYLOAD_BYTES)
            if dead.payload_bytes is not None:  # the full record's length and hash, not the cut's
                cut = cut.model_copy(update={"payload_bytes": dead.payload_bytes,
                                             "payload_sha256": dead.payload_sha256})
            if dead.key_truncated:
                cut = cut.model_copy(update={"key_truncated": True})
            return cut
    reason = f"refused by the broker on {topic} partition {partition}: " \
             f"{type(error).__name__}: {error}"
    return dead_letter(topic=topic, partition=partition, offset=-1, key=key, raw=value,
                       error=InvalidEvent(reason, kind="unsendable"),
                       max_payload_bytes=REDUCED_PAYLOAD_BYTES)


def describe(topic: str, partition: int, value: bytes | None, dlq_topic: str) -> str:
    """Where a refused record came from, for the log line: the source position of a dead
    letter, else the output topic and partition."""
    if topic == dlq_topic and value is not None:
        try:
            dead = DeadLetter.model_validate_json(value)
        except ValidationError:
            dead = None
        if dead is not None:
            return (f"dead letter of {dead.source_topic} partition {dead.partition} offset "
                    f"{dead.offset} ({dead.error_kind})")
    return f"output record for {topic} partition {partition}"

