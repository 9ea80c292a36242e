"""The holiday grid retraining builds from the recorded calendar (optimizer/holidays.py): each
series' location's holidays and every location's ("*"), clipped to the grid — the very flags
the stream's calendar (streams/holiday_calendar.py) hands the served model."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np

from optimizer.holidays import holiday_grid
from schemas.events import ALL_LOCATIONS, HolidayEvent
from streams.holiday_calendar import HolidayCalendar

EPOCH = date(1970, 1, 1)


def day(d: date) -> int:
    return (d - EPOCH).days


def test_a_series_gets_its_locations_and_every_locations_holidays_on_the_grid() -> None:
    start = np.datetime64("2024-03-01")
    spans = [
        ("berlin", day(date(2024, 3, 3)), day(date(2024, 3, 4))),
        (ALL_LOCATIONS, day(date(2024, 3, 4)), day(date(2024, 3, 5))),  # overlaps berlin's
        ("paris", day(date(2024, 2, 27)), day(date(2024, 3, 1))),  # starts before the grid
        ("paris", day(date(2024, 3, 9)), day(date(2024, 3, 12))),  # ends after it
        ("rome", day(date(2024, 4, 1)), day(date(2024, 4, 2))),  # outside it
    ]
    grid = holiday_grid(["berlin", "paris", "berlin", "rome", "oslo"], start, 10, spans)
    on = [{int(d) + 1 for d in np.flatnonzero(row)} for row in grid]  # days of March
    assert on == [{3, 4, 5}, {1, 4, 5, 9, 10}, {3, 4, 5}, {4, 5}, {4, 5}]
    assert set(np.unique(grid)) == {0.0, 1.0}
    # without an every-location holiday, a location without one has none
    only_own = holiday_grid(["berlin", "oslo"], start, 10, spans[:1])
    assert only_own[0].sum() == 2 and not only_own[1].any()
    assert holiday_grid([], start, 10, spans).shape == (0, 10)


def test_the_grid_is_the_streams_calendar_flags() -> None:
    """Random calendars (versions, withdrawals, "*"): the live holidays' grid equals what the
    stream's HolidayCalendar hands the forecaster for the same rows and days."""
    rng = np.random.default_rng(7)
    locations = ["a", "b", "c", ALL_LOCATIONS]
    for _ in range(20):
        calendar = HolidayCalendar()
        live: dict[str, tuple[str, int, int] | None] = {}
        held: dict[str, int] = {}
        for _ in range(int(rng.integers(0, 30))):
            event_id = f"h{int(rng.integers(0, 12))}"
            version = int(rng.integers(1, 4))
            first = date(2024, 1, 1) + timedelta(days=int(rng.integers(0, 90)))
            last = first + timedelta(days=int(rng.integers(0, 6)))
            event = HolidayEvent(event_id=event_id, version=version,
                                 location=str(rng.choice(locations)), start_day=first,
                                 end_day=last, cancelled=bool(rng.random() < 0.2))
            calendar.apply(event)
            if version > held.get(event_id, 0):  # the recorded table's upsert rule
                held[event_id] = version
                live[event_id] = None if event.cancelled else (
                    event.location, day(first), day(last))
        rows = [str(x) for x in rng.choice(["a", "b", "c", "d"], size=6)]
        grid_start = date(2024, 1, 1) + timedelta(days=int(rng.integers(0, 60)))
        n_days = int(rng.integers(1, 40))
        ours = holiday_grid(rows, np.datetime64(grid_start), n_days,
                            [span for span in live.values() if span is not None])
        np.testing.assert_array_equal(ours, calendar.flags(rows, day(grid_start), n_days))
