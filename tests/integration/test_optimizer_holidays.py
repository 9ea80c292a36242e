"""The holiday calendar through the optimizer into PostgreSQL, on a real Kafka broker.

The optimizer records `shop.calendar` in `holiday_calendar` by the stream's rules — the
highest version of a holiday wins whatever order its versions come in, a cancelled one is
withdrawn, a malformed record is skipped (the stream worker dead-letters it) — and
`read_holiday_flags` turns the rows into the holiday flags retraining trains on: each
series' location's holidays and every location's ("*").
"""

from datetime import date

import asyncpg
import numpy as np
import pytest

from optimizer.holidays import read_holiday_flags
from optimizer.service import OptimizerService
from schemas import encode, sku_key
from schemas.events import HolidayEvent
from streams.topics import TopicSpec, create_topics
from tests.support.kafka import create_optimizer_topics, isolated_settings, produce

pytestmark = pytest.mark.asyncio(loop_scope="session")


def holiday(event_id: str, location: str, start: int, end: int, **fields: object
            ) -> tuple[str, bytes]:
    event = HolidayEvent(event_id=event_id, location=location, start_day=date(2024, 3, start),
                         end_day=date(2024, 3, end), **fields)  # type: ignore[arg-type]
    return event_id, encode(event)


async def test_holidays_are_recorded_by_version(kafka_bootstrap, pg_database):
    settings = isolated_settings(kafka_bootstrap)
    await create_optimizer_topics(settings)
    await create_topics(settings, [TopicSpec(settings.topics.calendar, 2, compacted=True)])
    records = [
        holiday("easter", "berlin", 10, 12, name="Easter"),
        holiday("easter", "berlin", 11, 13, version=2, name="Easter"),  # moved a day
        holiday("easter", "berlin", 1, 5),  # version 1 again, redelivered late: stale
        holiday("fair", "paris", 4, 6),
        holiday("fair", "paris", 4, 6, version=2, cancelled=True),  # withdrawn
        holiday("national", "*", 20, 21, name="every\x00where"),  # every location's
        holiday("local", "paris", 21, 22),  # overlaps the national one on the 21st
        holiday("closed\x00", "oslo", 25, 25),  # a valid id PostgreSQL text cannot hold
        ("bad", b'{"event_id": "bad", "location": "paris"}'),  # malformed: no days
    ]
    await produce(settings, settings.topics.calendar, records)
    counters = await OptimizerService(settings, pg_database, max_records=3).run_until_idle(2.0)
    # the malformed one is skipped, not dead-lettered: the stream worker, which reads the
    # shop's topics too, dead-letters it (one dead letter per bad record, not two)
    assert counters.holidays_in == len(records) - 1 and counters.holidays_refused == 1
    assert counters.dlq == 0

    async def table() -> dict:
        conn = await asyncpg.connect(pg_database)
        try:
            return {r["event_id"]: (r["version"], r["location"], r["start_day"].day,
                                    r["end_day"].day, r["cancelled"], r["name"])
                    for r in await conn.fetch("SELECT * FROM holiday_calendar")}
        finally:
            await conn.close()

    first = await table()
    assert first == {"easter": (2, "berlin", 11, 13, False, "Easter"),
                     "fair": (2, "paris", 4, 6, True, None),
                     # PostgreSQL text holds no NUL: U+FFFD stands for it
                     "national": (1, "*", 20, 21, False, "every\ufffdwhere"),
                     "local": (1, "paris", 21, 22, False, None),
                     "closed\ufffd": (1, "oslo", 25, 25, False, None)}

    conn = await asyncpg.connect(pg_database)
    try:
        keys = [sku_key("MUG", "berlin"), sku_key("TEA", "paris"), sku_key("JAM", "oslo"),
                sku_key("CUP", "berlin")]
        flags = await read_holiday_flags(conn, keys, np.datetime64("2024-03-01"), 31)
        assert flags is not None and flags.shape == (4, 31)
        on = [{int(d) + 1 for d in np.flatnonzero(row)} for row in flags]  # days of March
        assert on == [{11, 12, 13, 20, 21}, {20, 21, 22}, {20, 21, 25}, {11, 12, 13, 20, 21}]
        # a grid that starts within a holiday: clipped to it
        late = await read_holiday_flags(conn, keys[:1], np.datetime64("2024-03-12"), 3)
        assert late is not None and late.tolist() == [[1.0, 1.0, 0.0]]
        # a window no holiday covers reads as none: the panel keeps no holiday column
        assert await read_holiday_flags(conn, keys, np.datetime64("2024-05-01"), 10) is None
        # nor does one whose only holiday is withdrawn (paris' fair on the 4th to 6th)
        assert await read_holiday_flags(conn, [sku_key("TEA", "paris")],
                                        np.datetime64("2024-03-03"), 5) is None
    finally:
        await conn.close()

    # everything again (a producer retry) and a restart: nothing changes
    await produce(settings, settings.topics.calendar, records)
    again = await OptimizerService(settings, pg_database).run_until_idle(2.0)
    assert again.holidays_in == len(records) - 1
    assert await table() == first


async def test_a_database_without_the_calendar_reads_as_no_holiday(pg_database):
    """A database migrated before 0009 (no holiday_calendar table): retraining as before."""
    conn = await asyncpg.connect(pg_database)
    try:
        assert await read_holiday_flags(conn, [sku_key("MUG", "berlin")],
                                        np.datetime64("2024-03-01"), 31) is None
    finally:
        await conn.close()
