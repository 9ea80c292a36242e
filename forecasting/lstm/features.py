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
    "PROMO_DIM",
    "RING_DAYS",
    "YEAR",
    "YEAR_AGO_GAPS",
    "DayRing",
    "ScaleState",
    "calendar_features",
    "check_gaps",
    "future_dim",
    "future_features",
    "head_inputs",
    "holiday_flags",
    "input_dim",
    "input_features",
    "running_scales",
    "scale_step",
    "target_month_dim",
    "target_month_features",
    "weekday_of_level",
    "year_ago_dim",
    "year_ago_features",
    "year_ago_span",
    "year_offsets",
]

N_WEEKDAYS, N_MONTHS = 7, 12
CALENDAR_DIM = N_WEEKDAYS + N_MONTHS + 1  # weekday one-hot, month one-hot, holiday flag
INPUT_DIM = 3 + CALENDAR_DIM  # scaled demand, missing flag, log scale, calendar
# With LSTMConfig.promo_inputs one more input, last: the day's planned-promotion flag
# (`input_dim`); the head then also sees the horizon's H flags (`head_inputs`' `promo`).
PROMO_DIM = 1
SCALE_FLOOR = 0.01  # units/bucket; keeps y / scale finite for series that never sold
EPOCH = np.datetime64("1970-01-01", "D")
YEAR = 364  # 52 weeks: the same weekday one year earlier
YEAR_BASE_DAYS = 28  # the year-ago level: mean of the 28 days up to origin - YEAR
RING_DAYS = YEAR + YEAR_BASE_DAYS  # days a series must carry for its year-ago features
YEAR_CLIP = 10.0  # year-ago inputs are ratios; a lumpy series' spikes are clipped here
# What a year-ago step without an observed day says (`year_ago_features`' `gaps`).
YEAR_AGO_GAPS = ("zero", "unknown", "weekday")

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


def running_scales(arr: FloatArray, memory: int) -> tuple[FloatArray, ScaleState]:
    """`scale_step` over every day of windows (n, T) from an empty state: the scales (n, T)
    and the final state. The same float operations bit for bit (a test
    compares), but the counts and weights are computed for all days at once and only the
    level's recurrence is a loop over days (3 numpy operations a day instead of 11; this
    loop runs over the whole window even when the LSTM warms up over its end)."""
    n, length = arr.shape
    seen = np.isfinite(arr)
    count = np.cumsum(seen, axis=1, dtype=np.int32)  # observations so far (along rows: fast)
    state = ScaleState(np.zeros(n), count[:, -1].astype(np.float64) if length else np.zeros(n))
    # The weight 1 / max(min(count, memory), 1) looked up per count (the same divisions);
    # alpha and the values laid out (T, n), one contiguous row per day, for the loop.
    top = max(1, min(int(memory), length))
    weights = 1.0 / np.maximum(np.minimum(np.arange(top + 1, dtype=np.float64), memory), 1.0)
    weights = np.concatenate([[0.0], weights])  # index 0: not seen that day
    code = np.minimum(count, top, out=count)
    code += 1
    code *= seen
    alpha = weights[code.T]
    by_day = np.where(seen, arr, 0.0).T.copy()
    levels = np.empty((length, n))
    previous = state.level
    for t in range(length):  # level + alpha * (y - level), written into its row
        row = levels[t]
        np.subtract(by_day[t], previous, out=row)
        row *= alpha[t]
        row += previous
        previous = row
    state.level = previous.copy()
    scales: FloatArray = np.maximum(levels, SCALE_FLOOR, out=levels).T
    return scales, state


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


def calendar_features(days: DateArray, calendar: str = "uk", months: bool = True) -> FloatArray:
    """(..., CALENDAR_DIM) weekday one-hot, month one-hot and holiday flag of each day
    (`months` False: the month one-hot stays zero, for a model trained on too little history
    to have seen every month; see LSTMConfig.months_min_days)."""
    days = np.asarray(days, dtype="datetime64[D]")
    ordinal = (days - EPOCH).astype(np.int64)
    weekday = (ordinal + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    month = days.astype("datetime64[M]").astype(np.int64) % 12
    out = np.zeros((*days.shape, CALENDAR_DIM))
    np.put_along_axis(out, weekday[..., None], 1.0, axis=-1)
    if months:
        np.put_along_axis(out, (N_WEEKDAYS + month)[..., None], 1.0, axis=-1)
    out[..., -1] = holiday_flags(days, calendar)
    return out


MONTH_MODES = ("none", "onehot", "fourier")


def target_month_dim(horizon: int, month: str = "none", pairs: int = 2) -> int:
    """Width of the per-step target-month part of `future_features`."""
    if month not in MONTH_MODES:
        raise ValueError(f"unknown head month mode {month!r} (one of {MONTH_MODES})")
    per_step = {"none": 0, "onehot": N_MONTHS, "fourier": 2 * pairs}[month]
    return horizon * per_step


def future_dim(horizon: int, head_calendar: bool, annual: bool = False,
               month: str = "none", pairs: int = 2) -> int:
    """Width of `future_features`' last axis."""
    return (horizon + (horizon + N_MONTHS if head_calendar else 0) + (2 if annual else 0)
            + target_month_dim(horizon, month, pairs))


def future_features(origins: DateArray, horizon: int, calendar: str,
                    head_calendar: bool, annual: bool = False, month: str = "none",
                    pairs: int = 2, months: bool = True) -> FloatArray:
    """(..., future_dim) what the head knows about the `horizon` days after each origin date:
    their holiday flags and, with `head_calendar`, a flag per step "in a later month than the
    origin" and the month one-hot of the last step (so a forecast across a month end knows
    which days fall in which month); with `annual`, the sine and cosine of the origin's
    position in the year (one annual Fourier pair: where in a month, too); with `month`
    (`target_month_features`), the calendar month of each forecast day, last. `months`
    False zeroes the head-calendar month one-hot (the later-month flags stay)."""
    origins = np.asarray(origins, dtype="datetime64[D]")
    days = origins[..., None] + np.arange(1, horizon + 1).astype("timedelta64[D]")
    parts = [holiday_flags(days.reshape(-1), calendar).reshape(days.shape)]
    if head_calendar:
        months_of = days.astype("datetime64[M]")
        parts.append((months_of != origins.astype("datetime64[M]")[..., None])
                     .astype(np.float64))
        last = np.zeros((*origins.shape, N_MONTHS))
        if months:
            np.put_along_axis(last, (months_of[..., -1].astype(np.int64) % 12)[..., None],
                              1.0, axis=-1)
        parts.append(last)
    if annual:
        angle = 2 * np.pi * (origins - EPOCH).astype(np.int64) / 365.25
        parts += [np.sin(angle)[..., None], np.cos(angle)[..., None]]
    if month != "none":
        parts.append(target_month_features(days, month, pairs))
    out: FloatArray = np.concatenate(parts, axis=-1)
    return out


def target_month_features(days: DateArray, month: str, pairs: int = 2) -> FloatArray:
    """(..., target_month_dim) of forecast days (..., H): per step, the month one-hot of the
    day ("onehot", 12 per step) or `pairs` annual Fourier pairs of its day of the year
    ("fourier", sin and cos of k x angle, k = 1..pairs). Never masked by the year-ago flag:
    all series share the month pattern (store-item: December sells ~28% less than November),
    so the head can learn global month factors relative to the origin's level."""
    days = np.asarray(days, dtype="datetime64[D]")
    width = target_month_dim(days.shape[-1], month, pairs)
    if month == "onehot":
        out = np.zeros((*days.shape, N_MONTHS))
        idx = days.astype("datetime64[M]").astype(np.int64) % 12
        np.put_along_axis(out, idx[..., None], 1.0, axis=-1)
    else:
        doy = (days - days.astype("datetime64[Y]")).astype(np.int64)
        angle = 2 * np.pi * doy[..., None] * np.arange(1, pairs + 1) / 365.25
        out = np.concatenate([np.sin(angle), np.cos(angle)], axis=-1)
    flat: FloatArray = out.reshape(*days.shape[:-1], width)
    return flat


def year_ago_dim(horizon: int) -> int:
    """Width of `year_ago_features`' last axis."""
    return 2 * horizon + 2


def year_offsets(weeks: int = 1) -> NDArray[np.int64]:
    """The same-weekday days around a forecast day's year-ago day that its year-ago value
    averages: -7 weeks ... +7 weeks days (weeks=1: -7, 0, 7)."""
    out: NDArray[np.int64] = 7 * np.arange(-weeks, weeks + 1)
    return out


@lru_cache(maxsize=8)
def weekday_of_level(horizon: int) -> FloatArray:
    """(YEAR_BASE_DAYS, H) 0/1: column h-1 marks the days of the year-ago level (span
    indices 0 .. YEAR_BASE_DAYS - 1, days origin - RING_DAYS + 1 ...) on step h's weekday
    (shared: not to be written)."""
    days = np.arange(YEAR_BASE_DAYS)[:, None]
    steps = np.arange(1, horizon + 1)[None, :]
    out: FloatArray = ((days - (YEAR_BASE_DAYS - 1) - steps) % 7 == 0).astype(np.float64)
    return out


def check_gaps(gaps: str) -> None:
    """ValueError unless `gaps` is one of `YEAR_AGO_GAPS`."""
    if gaps not in YEAR_AGO_GAPS:
        raise ValueError(f"year_ago_gaps must be one of {YEAR_AGO_GAPS}, got {gaps!r}")


def year_ago_span(horizon: int, weeks: int = 1) -> int:
    """Days of history `year_ago_features` reads: from origin - RING_DAYS + 1 to
    origin - YEAR + horizon + 7 weeks (all before the origin, and all in the ring)."""
    width = YEAR_BASE_DAYS + horizon + 7 * weeks
    if weeks < 0 or horizon + 7 * weeks >= YEAR or width > RING_DAYS:
        raise ValueError(f"horizon {horizon} with {weeks} weeks too long for year-ago features")
    return width


def year_ago_features(span: FloatArray, scale: FloatArray, origins: DateArray,
                      horizon: int, weeks: int = 1, gaps: str = "zero") -> FloatArray:
    """(..., year_ago_dim) what the same weeks a year (52 weeks) earlier say about the
    `horizon` days after an origin, from `span` (..., year_ago_span) = the demand of days
    origin - RING_DAYS + 1 ... (NaN = missing), the running `scale` (...) at the origin and
    the origin dates (..., or fewer leading axes):

    - per step h, the mean of days origin + h - YEAR + `year_offsets(weeks)` (the same
      weekday; weeks=1: -7, 0, +7) that fall in the calendar month of origin + h (at least
      one does), over the
      scale: weekday and month effects a year ago, a month-end step change (December
      selling less than November) kept sharp;
    - the year-ago level (28-day mean up to origin - YEAR) over the scale;
    - per step, that mean over the year-ago level (the seasonal shape, growth aside);
    - 1.0 when the year-ago level exists, else 0.0 (then everything above is 0).

    Known at the origin (every day read is at least YEAR - horizon - 7 days old), so it is
    a known-future covariate of the head and a ring of the last RING_DAYS days is all the
    state a series carries for it.

    `gaps` (`YEAR_AGO_GAPS`): what a step whose year-ago days are all missing says when the
    year-ago level exists (a gap in the series' history a year ago, e.g. Rossmann's stores
    without rows for 2014-07 .. 2014-12). "zero": a mean over no day is 0, which reads as
    "sold nothing" (a closure: the prior then scales that day's forecast down to a fifth);
    "unknown": the origin has no year-ago information (everything 0, as for a series
    without a year of history, the regime the net trains on in its first year);
    "weekday": such a step reads the mean of its weekday over the year-ago level's 28 days
    (the weekly profile a year ago: a Sunday closure stays one; the level's mean when none
    of them was seen), the other steps keep theirs. Histories without such a gap give the
    same numbers in every mode.
    """
    check_gaps(gaps)
    seen = np.isfinite(span)
    base_n = seen[..., :YEAR_BASE_DAYS].sum(axis=-1)
    has_base = base_n > 0
    base = np.where(has_base, np.where(seen[..., :YEAR_BASE_DAYS],
                                       span[..., :YEAR_BASE_DAYS], 0.0).sum(axis=-1)
                    / np.maximum(base_n, 1), 0.0)
    # Day origin + h - YEAR + k sits at span index YEAR_BASE_DAYS - 1 + h + k.
    steps = np.arange(1, horizon + 1)
    offsets = year_offsets(weeks)
    shift = steps[:, None] + offsets[None, :]  # (H, K)
    same = _in_target_month(origins, steps, offsets)  # (..., H, K)
    window = span[..., YEAR_BASE_DAYS - 1 + shift]  # (..., H, K)
    use = same & np.isfinite(window)
    week_n = use.sum(axis=-1)
    week = np.where(week_n > 0, np.where(use, window, 0.0).sum(axis=-1)
                    / np.maximum(week_n, 1), 0.0)
    if gaps == "unknown":
        blind = has_base & np.any(week_n == 0, axis=-1)
        if blind.any():
            has_base = has_base & ~blind
            base = np.where(blind, 0.0, base)
            week = np.where(blind[..., None], 0.0, week)
    elif gaps == "weekday":
        gap = has_base[..., None] & (week_n == 0)
        if gap.any():
            pick = weekday_of_level(horizon)  # (YEAR_BASE_DAYS, H)
            level_seen = seen[..., :YEAR_BASE_DAYS]
            sums = np.where(level_seen, span[..., :YEAR_BASE_DAYS], 0.0) @ pick
            counts = level_seen.astype(np.float64) @ pick
            profile = np.where(counts > 0, sums / np.maximum(counts, 1.0), base[..., None])
            week = np.where(gap, profile, week)
    shape = week / np.maximum(base, SCALE_FLOOR)[..., None]
    shape = np.where(has_base[..., None], shape, 0.0)
    out: FloatArray = np.concatenate(
        [np.minimum(week / scale[..., None], YEAR_CLIP),
         np.minimum(base / scale, YEAR_CLIP)[..., None],
         np.minimum(shape, YEAR_CLIP), has_base[..., None].astype(np.float64)], axis=-1)
    return out


def _in_target_month(origins: DateArray, steps: NDArray[np.int64],
                     offsets: NDArray[np.int64]) -> NDArray[np.bool_]:
    """(*origins.shape, H, K): is day origin + h - YEAR + k in the calendar month of
    origin + h (a year earlier)? Computed once per distinct origin date (a batch of series
    forecast from the same day costs one)."""
    o = np.asarray(origins, dtype="datetime64[D]")
    uniq, inv = np.unique(o.reshape(-1), return_inverse=True)
    u = uniq[:, None, None]
    shift = (steps[:, None] + offsets[None, :] - YEAR).astype("timedelta64[D]")
    then = (u + shift).astype("datetime64[M]").astype(np.int64)
    target = (u + steps[:, None].astype("timedelta64[D]")).astype("datetime64[M]")
    out: NDArray[np.bool_] = (then + 12 == target.astype(np.int64))[inv]
    return out.reshape(*o.shape, steps.size, offsets.size)


def head_inputs(origins: DateArray, scale: FloatArray, span: FloatArray | None, *,
                horizon: int, calendar: str, head_calendar: bool, annual: bool,
                mask_calendar: bool = False, weeks: int = 1, month: str = "none",
                pairs: int = 2, months: bool = True,
                promo: FloatArray | None = None, gaps: str = "zero") -> FloatArray:
    """(..., Fh) everything the head sees besides the LSTM state: `future_features` of the
    origin dates (...), then, when `promo` (..., H) is given, the planned-promotion flags
    of the `horizon` days after each origin (LSTMConfig.promo_inputs), and, when `span`
    (..., year_ago_span) is given, `year_ago_features` with the running `scale` (...) at
    the origins (last: the head's year-ago prior reads them there). `origins` may have
    fewer leading axes than `scale` (a date axis shared by all series).

    `mask_calendar`: where the year-ago level is known, the head-calendar part (later-month
    flags, month of the last step) is zeroed: the year-ago shape says the same per day and
    per series, and with both the head smeared a month-end step over the whole horizon
    (store-item's Nov -> Dec folds); series without a year of history keep it. The
    per-step target month (`month`) is never masked. `gaps`: `year_ago_features`'."""
    fut = future_features(origins, horizon, calendar, head_calendar, annual, month, pairs,
                          months)
    flags: list[FloatArray] = []
    if promo is not None:
        if promo.shape[-1] != horizon:
            raise ValueError(f"promo flags: {promo.shape[-1]} days, horizon {horizon}")
        flags = [promo]
    if span is None:
        if not flags:
            return fut
        shape = np.broadcast_shapes(fut.shape[:-1], promo.shape[:-1])  # type: ignore[union-attr]
        return np.concatenate([np.broadcast_to(fut, (*shape, fut.shape[-1])),
                               np.broadcast_to(flags[0], (*shape, horizon))], axis=-1)
    ya = year_ago_features(span, scale, origins, horizon, weeks, gaps)
    fut = np.broadcast_to(fut, (*ya.shape[:-1], fut.shape[-1]))
    if mask_calendar and head_calendar:
        fut = fut.copy()
        fut[..., horizon : 2 * horizon + N_MONTHS] *= 1.0 - ya[..., -1:]
    flags = [np.broadcast_to(f, (*ya.shape[:-1], horizon)) for f in flags]
    out: FloatArray = np.concatenate([fut, *flags, ya], axis=-1)
    return out


@dataclass
class DayRing:
    """The last RING_DAYS bucket values of each series (NaN = missing or before its first),
    a circular buffer per series with its oldest day at `pos` (float32: 1.5 kB per series).

    Series i's days live in row `rows[i]` of `values` (row i when `rows` is None): a
    `slots.StateSlots` store hands out rings that are views of its own rows. Folding in a
    day writes one slot and advances `pos`: `push_` does that in place, O(1) per series
    (for a caller that drops the old state, as a stream does); `push` first copies the
    series' rows so the old ring stays as it was (O(RING_DAYS) per series)."""

    values: NDArray[np.float32]  # (m, RING_DAYS), m >= the number of series
    pos: NDArray[np.intp]  # (n,) slot of each series' oldest day
    rows: NDArray[np.intp] | None = None  # (n,) row of `values` per series; None: row i

    @classmethod
    def from_windows(cls, windows: FloatArray) -> DayRing:
        """The ring after windows (n, T) (their last RING_DAYS days; NaN before a short one)."""
        n, length = windows.shape
        values = np.full((n, RING_DAYS), np.nan, dtype=np.float32)
        keep = min(length, RING_DAYS)
        if keep:
            values[:, RING_DAYS - keep :] = windows[:, length - keep :]
        return cls(values, np.zeros(n, dtype=np.intp))

    @property
    def n_series(self) -> int:
        """Number of series (rows of `pos`)."""
        return int(self.pos.shape[0])

    def own_values(self) -> NDArray[np.float32]:
        """(n, RING_DAYS) a copy of the series' rows (slots as stored, oldest at `pos`)."""
        if self.rows is None:
            return self.values[: self.n_series].copy()
        return self.values[self.rows]

    def push(self, y: FloatArray) -> DayRing:
        """A new ring with day values `y` (n,) folded in (the oldest day drops out); this
        one is left as it was."""
        ring = DayRing(self.own_values(), self.pos.copy())
        ring.push_(y)
        return ring

    def push_(self, y: FloatArray) -> DayRing:
        """Fold day values `y` (n,) in, in place: one write per series (their rows must be
        distinct, as a store's slots of distinct keys are). Returns self."""
        rows = np.arange(self.n_series) if self.rows is None else self.rows
        self.values[rows, self.pos] = y
        self.pos = self.pos + 1
        self.pos[self.pos == RING_DAYS] = 0
        return self

    def span(self, days: int, dtype: type[np.floating] = np.float64) -> FloatArray:
        """(n, days) the oldest `days` days, oldest first (float64 unless `dtype`)."""
        idx = self.pos[:, None] + np.arange(days)[None, :]
        idx[idx >= RING_DAYS] -= RING_DAYS
        rows = np.arange(self.n_series) if self.rows is None else self.rows
        idx += rows[:, None] * RING_DAYS  # flat positions: one take, no 2-d fancy index
        flat = self.values.reshape(-1)
        out: FloatArray = np.take(flat, idx).astype(dtype, copy=False)
        return out

    def take(self, idx: NDArray[np.intp]) -> DayRing:
        """The rings of series `idx` (a copy)."""
        rows = idx if self.rows is None else self.rows[idx]
        return DayRing(self.values[rows], self.pos[idx].copy())

    @staticmethod
    def concat(rings: list[DayRing]) -> DayRing:
        """Stack the series of `rings` into one (a copy)."""
        return DayRing(np.concatenate([r.own_values() for r in rings]),
                       np.concatenate([r.pos for r in rings]))


def input_dim(promo_inputs: bool) -> int:
    """Width of `input_features`' last axis: INPUT_DIM, + PROMO_DIM with promotion inputs."""
    return INPUT_DIM + (PROMO_DIM if promo_inputs else 0)


def input_features(
    y: FloatArray, scale: FloatArray, calendar: FloatArray, log_scale_mean: float,
    log_scale_std: float, promo: FloatArray | None = None,
) -> FloatArray:
    """(..., INPUT_DIM) inputs of one or many buckets from demand, running scale, calendar;
    with `promo` (...) (the day's planned-promotion flag, LSTMConfig.promo_inputs) one more,
    last: (..., INPUT_DIM + PROMO_DIM).

    `y`, `scale` are (...), `calendar` is (..., CALENDAR_DIM). A missing bucket gets demand 0
    and missing flag 1.
    """
    seen = np.isfinite(y)
    scaled = np.where(seen, y, 0.0) / scale
    log_scale = (np.log1p(scale) - log_scale_mean) / log_scale_std
    parts = [scaled[..., None], (~seen)[..., None].astype(np.float64), log_scale[..., None],
             calendar]
    if promo is not None:
        parts.append(np.broadcast_to(promo, y.shape)[..., None])
    return np.concatenate(parts, axis=-1)
