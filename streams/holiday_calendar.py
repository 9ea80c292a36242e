"""The shop's holiday calendar (the `shop.calendar` topic): every location's holidays, kept
whole by every worker, handed to the forecaster as the data's own holiday flags
(`Covariates.holiday`) of a model trained on them (`LSTMConfig.data_holidays`,
`LightGBMConfig.data_holidays`).

A `HolidayEvent` says that a location (or every location: `ALL_LOCATIONS`) keeps a holiday
over some days. The calendar keeps each by event id — a higher version replaces it, a
withdrawn one stays as an entry without days that remembers its version, so a stale
redelivery cannot bring it back. A day no live entry of a SKU's location (or of every
location) covers is not a holiday. The calendar is small (a few dozen days a year per
location), so it is not partitioned by SKU: `streams.calendar_feed` reads every partition of
the topic into every worker, as Kafka Streams reads a global table. At most `MAX_ENTRIES`
entries are kept (those that ended first go first).

Daily buckets only: a holiday covers days.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Literal

import numpy as np

from forecasting._numeric import FloatArray
from schemas.events import ALL_LOCATIONS, HolidayEvent

__all__ = ["MAX_ENTRIES", "HolidayCalendar"]

MAX_ENTRIES = 200_000
_EPOCH = date(1970, 1, 1)


class HolidayCalendar:
    """Every location's holidays by event id (module docstring); `revision` counts the
    changes (a reader may cache what it derived from one revision)."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self.revision = 0
        # event_id -> (location, first day, last day (days since the epoch), version, live)
        self._entries: dict[str, tuple[str, int, int, int, bool]] = {}
        # location -> {event_id: (first day, last day)} of the live entries
        self._spans: dict[str, dict[str, tuple[int, int]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def apply(self, event: HolidayEvent) -> Literal["ok", "duplicate"]:
        """Keep `event` ("duplicate": its version is not newer than the one held)."""
        held = self._entries.get(event.event_id)
        if held is not None:
            if held[3] >= event.version:
                return "duplicate"
            self._spans.get(held[0], {}).pop(event.event_id, None)
        first, last = (event.start_day - _EPOCH).days, (event.end_day - _EPOCH).days
        live = not event.cancelled
        self._entries[event.event_id] = (event.location, first, last, event.version, live)
        if live:
            self._spans.setdefault(event.location, {})[event.event_id] = (first, last)
        if len(self._entries) > self.max_entries:
            by_end = sorted(self._entries, key=lambda k: self._entries[k][2])
            for key in by_end[: len(self._entries) - self.max_entries]:
                location = self._entries.pop(key)[0]
                self._spans.get(location, {}).pop(key, None)
        self.revision += 1
        return "ok"

    def knows(self, locations: Sequence[str]) -> bool:
        """True when any of `locations` (or every location) has a live holiday."""
        spans = self._spans
        if spans.get(ALL_LOCATIONS):
            return True
        return any(spans.get(loc) for loc in set(locations))

    def flags(self, locations: Sequence[str], first_day: int, n_days: int) -> FloatArray:
        """(len(locations), n_days) 1.0 on each row's location's holidays over the days
        `first_day` .. `first_day + n_days - 1` (days since 1970-01-01, UTC), else 0.0."""
        out = np.zeros((len(locations), n_days))
        everywhere = self._row(ALL_LOCATIONS, first_day, n_days)
        rows_of: dict[str, list[int]] = {}
        for i, location in enumerate(locations):
            rows_of.setdefault(location, []).append(i)
        for location, rows in rows_of.items():
            own = self._row(location, first_day, n_days)
            row = own if everywhere is None else (
                everywhere if own is None else np.maximum(own, everywhere))
            if row is not None:
                out[rows] = row
        return out

    def _row(self, location: str, first_day: int, n_days: int) -> FloatArray | None:
        spans = self._spans.get(location)
        if not spans:
            return None
        row = np.zeros(n_days)
        for first, last in spans.values():
            lo, hi = max(first - first_day, 0), min(last - first_day + 1, n_days)
            if hi > lo:
                row[lo:hi] = 1.0
        return row
