"""The alerts topic as its subscribers read it: which alerts they want, a consumer, decoding.

Shared by `streams.alert_tail` (print alerts) and `streams.alert_forwarder` (deliver them to a
webhook). Records that are not `AlertEvent`s are logged and skipped: a subscriber is a reader
of the contract, the DLQ is the worker's business.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import get_args

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError

from runtime.errors import ServiceUnavailable
from runtime.kafka_config import client_kwargs
from runtime.settings import Settings
from schemas import AlertEvent, InvalidEvent, decode

__all__ = ["ALERT_KINDS", "EVERY_ALERT", "AlertFilter", "alerts_consumer", "caught_up",
           "decode_alert", "start_consumer"]

log = logging.getLogger(__name__)

# the kinds the contract allows, read from the schema so the two cannot drift apart
ALERT_KINDS: tuple[str, ...] = get_args(AlertEvent.model_fields["kind"].annotation)


@dataclass(frozen=True)
class AlertFilter:
    """Which alerts a subscriber wants: any of `kinds` (all if empty), SKU exact match."""

    kinds: frozenset[str] = frozenset()
    sku: str | None = None
    location: str | None = None

    def __call__(self, alert: AlertEvent) -> bool:
        if self.kinds and alert.kind not in self.kinds:
            return False
        if self.sku is not None and alert.sku != self.sku:
            return False
        return self.location is None or alert.location == self.location


EVERY_ALERT = AlertFilter()  # the default subscription: no filter


def alerts_consumer(settings: Settings, *, group_id: str | None, from_beginning: bool
                    ) -> AIOKafkaConsumer:
    """A consumer of the alerts topic that commits only when told to."""
    return AIOKafkaConsumer(
        settings.topics.alerts, **client_kwargs(settings), group_id=group_id,
        enable_auto_commit=False, auto_offset_reset="earliest" if from_beginning else "latest",
        session_timeout_ms=int(settings.kafka_session_timeout_s * 1000),
        heartbeat_interval_ms=max(100, int(settings.kafka_session_timeout_s * 250)))


async def start_consumer(consumer: AIOKafkaConsumer, settings: Settings) -> None:
    """Start `consumer`; an unreachable broker is a ServiceUnavailable that says what to check."""
    try:
        await consumer.start()
    except KafkaError as exc:
        await consumer.stop()
        raise ServiceUnavailable(
            f"cannot reach Kafka at {settings.kafka_bootstrap} ({type(exc).__name__}); check "
            "SHELFCAST_KAFKA_BOOTSTRAP and that the broker is up") from exc


def decode_alert(record: ConsumerRecord, settings: Settings) -> AlertEvent | None:
    """The record's AlertEvent, or None (logged) when it is not one."""
    try:
        return decode(AlertEvent, record.value, max_bytes=settings.max_payload_bytes)
    except InvalidEvent as exc:
        log.warning("skipping %s[%d]@%d: not an AlertEvent (%s)", record.topic,
                    record.partition, record.offset, exc)
        return None


async def caught_up(consumer: AIOKafkaConsumer) -> bool:
    """True when the consumer holds partitions and has read each to its end offset."""
    parts = consumer.assignment()
    if not parts:
        return False
    ends = await consumer.end_offsets(list(parts))
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True
