"""The shop's holiday calendar in PostgreSQL (`holiday_calendar`, migration 0009), for retraining.

The optimizer records the shop's holidays (`shop.calendar`) beside the demand it records
(`demand_history`), in the same batch transaction, so `shelfcast retrain` trains the
challenger on the holiday flags the stream serves it (streams/holiday_calendar.py) — without
them a retrained model learns no holidays (`data_holidays` turns itself off without the
column) while the stream hands it the calendar.

The rules are the stream's: per event_id the highest version wins (an equal or lower one
changes nothing, whatever order redeliveries come in), a cancelled holiday stays as a
withdrawn row remembering its version, a holiday of `ALL_LOCATIONS` ("*") is every
location's, and a day no live holiday of a series' location covers is not a holiday
(`holiday_grid`, the rule of `HolidayCalendar.flags`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date

import asyncpg
import numpy as np

from forecasting._numeric import FloatArray
from optimizer.pg_text import pg_text
from schemas.events import ALL_LOCATIONS, HolidayEvent
from schemas.keys import split_key

__all__ = ["HolidaySpan", "holiday_grid", "read_holiday_flags", "write_holidays"]

HolidaySpan = tuple[str, int, int]
"""One live holiday: (location, or ALL_LOCATIONS for every location; first day, last day —
both days since the epoch, UTC, both included)."""

_UPSERT = """
INSERT INTO holiday_calendar (event_id, version, location, start_day, end_day, cancelled, name)
SELECT * FROM unnest($1::text[], $2::int4[], $3::text[], $4::date[], $5::date[], $6::bool[],
                     $7::text[])
ORDER BY 1  -- one lock order for every writer
ON CONFLICT (event_id) DO UPDATE
SET version = EXCLUDED.version, location = EXCLUDED.location, start_day = EXCLUDED.start_day,
    end_day = EXCLUDED.end_day, cancelled = EXCLUDED.cancelled, name = EXCLUDED.name,
    recorded_at = now()
WHERE holiday_calendar.version < EXCLUDED.version
"""

_SELECT = """
SELECT location, start_day, end_day
FROM holiday_calendar
WHERE NOT cancelled AND end_day >= $1 AND start_day <= $2
  AND (location = ANY($3::text[]) OR location = $4)
"""

_EPOCH = date(1970, 1, 1)


async def write_holidays(conn: asyncpg.Connection, events: Sequence[HolidayEvent]) -> int:
    """Record `events` (inside the caller's transaction); returns how many rows changed. Of
    several versions of one holiday in the batch, the highest is written."""
    latest: dict[str, HolidayEvent] = {}
    for e in events:
        held = latest.get(e.event_id)
        if held is None or e.version > held.version:
            latest[e.event_id] = e
    if not latest:
        return 0
    rows = list(latest.values())
    status = await conn.execute(
        _UPSERT, [pg_text(e.event_id) for e in rows], [e.version for e in rows],
        [e.location for e in rows], [e.start_day for e in rows], [e.end_day for e in rows],
        [e.cancelled for e in rows],
        [None if e.name is None else pg_text(e.name) for e in rows])
    return int(status.rsplit(" ", 1)[-1])


def holiday_grid(locations: Sequence[str], start: np.datetime64, n_days: int,
                 spans: Iterable[HolidaySpan]) -> FloatArray:
    """(len(locations), n_days) 1.0 on the days `start` .. `start + n_days - 1` that a span
    of the row's location, or of every location (ALL_LOCATIONS), covers; else 0.0."""
    first = int(np.asarray(start, dtype="datetime64[D]").astype(np.int64))
    by_location: dict[str, FloatArray] = {}
    for location, start_day, end_day in spans:
        lo, hi = max(start_day - first, 0), min(end_day - first + 1, n_days)
        if hi <= lo:
            continue
        row = by_location.get(location)
        if row is None:
            row = by_location[location] = np.zeros(n_days)
        row[lo:hi] = 1.0
    out = np.zeros((len(locations), n_days))
    everywhere = by_location.get(ALL_LOCATIONS)
    rows_of: dict[str, list[int]] = {}
    for i, location in enumerate(locations):
        rows_of.setdefault(location, []).append(i)
    for location, rows in rows_of.items():
        own = by_location.get(location)
        if own is None:
            own = everywhere
        elif everywhere is not None:
            own = np.maximum(own, everywhere)
        if own is not None:
            out[rows] = own
    return out


async def read_holiday_flags(conn: asyncpg.Connection, keys: Sequence[str],
                             start: np.datetime64, n_days: int) -> FloatArray | None:
    """The holiday flags (`Covariates.holiday`) of the series `keys` (`sku@location`, rows in
    order) on the grid `start` .. `start + n_days - 1` from the recorded calendar; None when
    no holiday covers any of them there (a shop that publishes no calendar trains exactly as
    before, and a model does not learn an input that is 0 on every day). A table that does
    not exist yet (a database migrated before 0009) reads as none."""
    first = start.astype("datetime64[D]")
    last = first + np.timedelta64(n_days - 1, "D")
    locations = [split_key(key)[1] for key in keys]
    try:
        rows = await conn.fetch(_SELECT, first.astype(date), last.astype(date),
                                sorted(set(locations)), ALL_LOCATIONS)
    except asyncpg.UndefinedTableError:
        return None
    spans = [(r["location"], (r["start_day"] - _EPOCH).days, (r["end_day"] - _EPOCH).days)
             for r in rows]
    if not spans:
        return None
    grid = holiday_grid(locations, first, n_days, spans)
    return grid if bool(grid.any()) else None
