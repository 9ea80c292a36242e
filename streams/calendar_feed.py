"""Every partition of `shop.calendar` read into one worker's `HolidayCalendar`, as Kafka
Streams reads a global table: no consumer group (each worker reads all of it), from the
beginning at start — the worker forecasts nothing before it has read up to the ends it found
(`start`), so a restarted worker sees the calendar the one before it saw — then following
the topic for as long as the worker runs.

A record that is not a valid `HolidayEvent` is skipped here: the worker of the consumer group
that owns its partition dead-letters it once, with the reason (`BatchProcessor`), as it does
for every input topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self

from aiokafka import AIOKafkaConsumer, TopicPartition

from runtime.kafka_config import client_kwargs
from runtime.settings import Settings
from schemas import InvalidEvent, decode
from schemas.events import HolidayEvent
from streams.holiday_calendar import HolidayCalendar
from streams.topics import topic_partitions

__all__ = ["CalendarFeed"]

log = logging.getLogger(__name__)


class CalendarFeed:
    """`async with CalendarFeed(settings) as feed:` reads the calendar topic up to its end,
    then keeps `feed.calendar` current in a task until the block ends."""

    def __init__(self, settings: Settings, calendar: HolidayCalendar | None = None) -> None:
        self.settings = settings
        self.topic = settings.topics.calendar
        self.calendar = calendar if calendar is not None else HolidayCalendar()
        self.skipped = 0  # records that are not valid HolidayEvents
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read every partition up to the end offsets found now, then follow in a task."""
        s = self.settings
        consumer = AIOKafkaConsumer(**client_kwargs(s), group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        self._consumer = consumer
        started = time.monotonic()
        numbers = await topic_partitions(s, self.topic)
        parts = [TopicPartition(self.topic, p) for p in sorted(numbers)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        remaining = {tp: end for tp, end in ends.items() if end > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=500, max_records=10_000)
            self._apply(r for records in batch.values() for r in records)
            for tp in list(remaining):
                if await consumer.position(tp) >= remaining[tp]:
                    del remaining[tp]
        log.info("holiday calendar: %d entr(ies) from %s in %.1f s (%d skipped)",
                 len(self.calendar), self.topic, time.monotonic() - started, self.skipped)
        self._task = asyncio.create_task(self._follow(), name="calendar-feed")

    async def _follow(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=1000, max_records=10_000)
            self._apply(r for records in batch.values() for r in records)

    def _apply(self, records: Iterable[Any]) -> None:
        max_bytes = self.settings.max_payload_bytes
        for record in records:
            try:
                event = decode(HolidayEvent, record.value, max_bytes=max_bytes)
            except InvalidEvent:
                self.skipped += 1  # dead-lettered by the partition's owner in the group
                continue
            self.calendar.apply(event)

    async def stop(self) -> None:
        """Stop following and close the consumer."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()
