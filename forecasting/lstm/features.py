"""Pure-numpy features of the LSTM: causal running scale, calendar and holiday flags.

Everything here is causal and incremental: the input of bucket t depends only on buckets
<= t and on a small carried state (running scale, observation count), so the recurrent state
after N buckets is the same whether it is computed in one pass or one bucket at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from forecasting._numeric import FloatArray

__all__ = [
    "CALENDAR_DIM",
    "INPUT_DIM",
    "ScaleState",
    "calendar_features",
    "future_dim",
    "future_features",
    "holiday_flags",
    "input_features",
    "scale_step",
]

N_WEEKDAYS, N_MONTHS = 7, 12
CALENDAR_DIM = N_WEEKDAYS + N_MONTHS + 1  # weekday one-hot, month one-hot, holiday flag
INPUT_DIM = 3 + CALENDAR_DIM  # scaled demand, missing flag, log scale, calendar
SCALE_FLOOR = 0.01  # units/bucket; keeps y / scale finite for series that never sold
EPOCH = np.datetime64("1970-01-01", "D")

DateArray = NDArray[np.datetime64]


@dataclass
class ScaleState:
    """Running per-series demand level: an EMA whose weight is 1/n until n reaches `memory`.

    That is the plain mean of the first `memory` observations, then an exponential average
    with that memory, so a new SKU is scaled by what it has sold so far and an old one tracks
    its level. Missing buckets leave it unchanged.
    """

    level: FloatArray  # (n,)
    count: FloatArray  # (n,) observed buckets so far

    @classmethod
    def empty(cls, n: int) -> ScaleState:
        """No observation yet for `n` series."""
        return cls(np.zeros(n), np.zeros(n))

    def copy(self) -> ScaleState:
        """An independent copy."""
        return ScaleState(self.level.copy(), self.count.copy())


def scale_step(state: ScaleState, y: FloatArray, memory: int) -> FloatArray:
    """Fold bucket values `y` (n,) (NaN = missing) into `state` in place; return the scale."""
    seen = np.isfinite(y)
    state.count = state.count + seen
    alpha = np.where(seen, 1.0 / np.maximum(np.minimum(state.count, memory), 1.0), 0.0)
    state.level = state.level + alpha * (np.where(seen, y, 0.0) - state.level)
    out: FloatArray = np.maximum(state.level, SCALE_FLOOR)
    return out


def _easter(year: int) -> date:
    """Gregorian Easter Sunday (the anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    m = (32 + 2 * e + 2 * i - h - k) % 7
    n = (a + 11 * h + 22 * m) // 451
    month, day = divmod(h + m - 7 * n + 114, 31)
    return date(year, month, day + 1)


def _monday_on_or_before(d: date) -> date:
    return d - timedelta(days=d.weekday())


@lru_cache(maxsize=256)
def _year_holidays(year: int) -> frozenset[date]:
    """UK-style trading closures: Christmas to 3 Jan, Easter Friday/Monday, May and August
    bank holidays. The UCI shop is closed on exactly these days (plus Saturdays, which the
    weekday one-hot covers)."""
    days = {date(year, 12, 24) + timedelta(days=i) for i in range(8)}  # 24 Dec .. 31 Dec
    days |= {date(year, 1, 1) + timedelta(days=i) for i in range(3)}  # 1 Jan .. 3 Jan
    easter = _easter(year)
    days |= {easter - timedelta(days=2), easter + timedelta(days=1)}
    first_may = date(year, 5, 1)
    days.add(first_may + timedelta(days=(7 - first_may.weekday()) % 7))
    days.add(_monday_on_or_before(date(year, 5, 31)))
    days.add(_monday_on_or_before(date(year, 8, 31)))
    return frozenset(days)


def holiday_flags(days: DateArray, calendar: str = "uk") -> FloatArray:
    """1.0 on the holiday/closure days of `calendar` ("uk" or "none"), else 0.0."""
    days = np.asarray(days, dtype="datetime64[D]")
    if calendar == "none" or days.size == 0:
        return np.zeros(days.shape)
    if calendar != "uk":
        raise ValueError(f"unknown holiday calendar {calendar!r} (known: uk, none)")
    lo, hi = days.min(), days.max()
    span = np.arange(lo, hi + np.timedelta64(1, "D"), dtype="datetime64[D]")
    flags = np.zeros(span.size)
    for year in range(int(str(lo)[:4]), int(str(hi)[:4]) + 1):
        for d in _year_holidays(year):
            pos = (np.datetime64(d, "D") - lo).astype(np.int64)
            if 0 <= pos < span.size:
                flags[pos] = 1.0
    out: FloatArray = flags[(days - lo).astype(np.int64)]
    return out


def calendar_features(days: DateArray, calendar: str = "uk") -> FloatArray:
    """(..., CALENDAR_DIM) weekday one-hot, month one-hot and holiday flag of each day."""
    days = np.asarray(days, dtype="datetime64[D]")
    ordinal = (days - EPOCH).astype(np.int64)
    weekday = (ordinal + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    month = days.astype("datetime64[M]").astype(np.int64) % 12
    out = np.zeros((*days.shape, CALENDAR_DIM))
    np.put_along_axis(out, weekday[..., None], 1.0, axis=-1)
    np.put_along_axis(out, (N_WEEKDAYS + month)[..., None], 1.0, axis=-1)
    out[..., -1] = holiday_flags(days, calendar)
    return out


def future_dim(horizon: int, head_calendar: bool) -> int:
    """Width of `future_features`' last axis."""
    return horizon + (horizon + N_MONTHS if head_calendar else 0)


def future_features(origins: DateArray, horizon: int, calendar: str,
                    head_calendar: bool) -> FloatArray:
    """(..., future_dim) what the head knows about the `horizon` days after each origin date:
    their holiday flags and, with `head_calendar`, a flag per step "in a later month than the
    origin" and the month one-hot of the last step (so a forecast across a month end knows
    which days fall in which month)."""
    origins = np.asarray(origins, dtype="datetime64[D]")
    days = origins[..., None] + np.arange(1, horizon + 1).astype("timedelta64[D]")
    parts = [holiday_flags(days.reshape(-1), calendar).reshape(days.shape)]
    if head_calendar:
        months = days.astype("datetime64[M]")
        parts.append((months != origins.astype("datetime64[M]")[..., None]).astype(np.float64))
        last = np.zeros((*origins.shape, N_MONTHS))
        np.put_along_axis(last, (months[..., -1].astype(np.int64) % 12)[..., None], 1.0,
                          axis=-1)
        parts.append(last)
    out: FloatArray = np.concatenate(parts, axis=-1)
    return out


def input_features(
    y: FloatArray, scale: FloatArray, calendar: FloatArray, log_scale_mean: float,
    log_scale_std: float,
) -> FloatArray:
    """(..., INPUT_DIM) inputs of one or many buckets from demand, running scale, calendar.

    `y`, `scale` are (...), `calendar` is (..., CALENDAR_DIM). A missing bucket gets demand 0
    and missing flag 1.
    """
    seen = np.isfinite(y)
    scaled = np.where(seen, y, 0.0) / scale
    log_scale = (np.log1p(scale) - log_scale_mean) / log_scale_std
    return np.concatenate(
        [scaled[..., None], (~seen)[..., None].astype(np.float64), log_scale[..., None], calendar],
        axis=-1,
    )
