"""Lag, rolling and calendar features of (series, origin, step) rows for tabular global models.

A row says: "standing at the end of day `origin` of series `i`, what is demand `step` days
ahead" (kind 0) or "the average daily demand over the next `step` days" (kind 1, the
cumulative target divided by `step`). Every demand feature is divided by the series' recent
level (mean of the last `SCALE_DAYS` observed days, floored), so one model serves a series
selling 2 units a day and one selling 2,000. All demand features look at days <= origin only;
the optional covariate features (`COVARIATE_FEATURES`: planned promotions and the price
ratio, `forecasting.covariates`) also read the target days, which are known in advance.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from forecasting._numeric import FloatArray
from forecasting.lstm.features import EPOCH, holiday_flags

__all__ = ["COVARIATE_FEATURES", "FEATURE_NAMES", "HOLIDAY_FEATURES", "PRICE_FEATURES",
           "PROMO_FEATURES",
           "SCALE_DAYS", "SCALE_FLOOR", "LagTable", "lag_features", "serving_features",
           "serving_grid"]

SCALE_DAYS = 56
SCALE_FLOOR = 0.1
N_LAGS = 28
ROLL_WINDOWS = (7, 28, 112, 364)
YEAR = 364  # 52 weeks: the same weekday one year earlier

FEATURE_NAMES: tuple[str, ...] = (
    *(f"lag_{k}" for k in range(N_LAGS)),
    *(f"mean_{w}" for w in ROLL_WINDOWS),
    "std_28", "zero_frac_28", "log_scale",
    "same_weekday_last", "same_weekday_mean4",
    "year_ago_target7", "year_ago_origin28",
    "step", "kind", "target_weekday", "target_month", "target_holiday", "origin_weekday",
    "span_holidays",
)

PROMO_FEATURES: tuple[str, ...] = ("promo_target", "promo_origin", "promo_span",
                                   "promo_recent28")
"""Appended to FEATURE_NAMES when a model uses covariates: the promotion on the target day
and on the origin day, the share of promotion days over (origin, target] (what the
cumulative rows need; a daily row's is its target day's), and over the 28 days up to the
origin (how much of the recent level, the scale, was bought by promotions)."""
PRICE_FEATURES: tuple[str, ...] = ("price_target", "price_span")
"""Appended after PROMO_FEATURES when the price ratio is used too (off by default: on
FreshRetailNet the `discount` column made LightGBM worse, benchmarks/README "Levers")."""
COVARIATE_FEATURES: tuple[str, ...] = PROMO_FEATURES + PRICE_FEATURES
HOLIDAY_FEATURES: tuple[str, ...] = ("own_holiday_target", "own_holiday_span")
"""Appended last with the data's own holidays (`LightGBMConfig.data_holidays`, off): the
target day's flag (`Covariates.holiday`), and the share of holidays over (origin, target]
(a daily row's: its target day's)."""


def _clip(a: NDArray[np.intp], lo: int, hi: int) -> NDArray[np.intp]:
    """`np.clip` of index arrays, without its fixed cost: numpy 2's clip looks up the dtype's
    limits on every call (~30 us), which a serving call of a few SKUs paid ~70 times."""
    out: NDArray[np.intp] = np.minimum(np.maximum(a, lo), hi)
    return out


@dataclass
class LagTable:
    """Cumulative sums of one panel, so any trailing-window mean is two lookups."""

    values: FloatArray  # (n, T) demand, NaN = missing
    csum: FloatArray  # (n, T + 1) cumulative sum of finite values
    csq: FloatArray  # (n, T + 1) cumulative sum of squares
    ccount: FloatArray  # (n, T + 1) cumulative count of finite values
    czero: FloatArray  # (n, T + 1) cumulative count of zero days

    @classmethod
    def of(cls, values: FloatArray) -> LagTable:
        """Precompute the cumulative sums of `values` (n, T)."""
        finite = np.isfinite(values)
        filled = np.where(finite, values, 0.0)
        pad = np.zeros((values.shape[0], 1))

        def cum(a: FloatArray) -> FloatArray:
            out: FloatArray = np.concatenate([pad, np.cumsum(a, axis=1)], axis=1)
            return out

        return cls(values, cum(filled), cum(filled * filled), cum(finite.astype(np.float64)),
                   cum((finite & (values == 0.0)).astype(np.float64)))

    def _span(self, table: FloatArray, rows: NDArray[np.intp], end: NDArray[np.intp],
              width: int) -> FloatArray:
        """Sum of `table`'s underlying values over days (end - width, end], clipped at 0."""
        t = self.values.shape[1]
        hi = _clip(end + 1, 0, t)
        lo = _clip(end + 1 - width, 0, t)
        out: FloatArray = table[rows, hi] - table[rows, lo]
        return out

    def mean(self, rows: NDArray[np.intp], end: NDArray[np.intp], width: int) -> FloatArray:
        """Mean of the observed days in (end - width, end]; NaN when none."""
        count = self._span(self.ccount, rows, end, width)
        total = self._span(self.csum, rows, end, width)
        with np.errstate(invalid="ignore", divide="ignore"):
            out: FloatArray = np.where(count > 0, total / count, np.nan)
        return out

    def at(self, rows: NDArray[np.intp], day: NDArray[np.intp]) -> FloatArray:
        """values[rows, day], NaN where day is outside the grid."""
        t = self.values.shape[1]
        ok = (day >= 0) & (day < t)
        out: FloatArray = np.where(ok, self.values[rows, _clip(day, 0, t - 1)], np.nan)
        return out


def lag_features(
    table: LagTable,
    rows: NDArray[np.intp],
    origins: NDArray[np.intp],
    steps: NDArray[np.intp],
    kinds: NDArray[np.intp],
    dates: NDArray[np.datetime64],
    calendar: str = "uk",
    covariates: tuple[FloatArray, FloatArray] | None = None,
    price: bool = False,
    holiday: FloatArray | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Features (m, len(FEATURE_NAMES)) and the scale (m,) of rows (series, origin, step, kind).

    `origins` index the columns of `table.values`; `dates` (T + horizon,) gives the date of
    each column and of the days after the grid (for calendar features of the targets).
    `covariates`: (promo, price_ratio), each (n, T + horizon) on the columns of `dates`:
    the PROMO_FEATURES are appended, then the PRICE_FEATURES if `price`. `holiday` (n,
    T + horizon): the data's own holiday flags, the HOLIDAY_FEATURES appended last.
    """
    scale = table.mean(rows, origins, SCALE_DAYS)
    scale = np.maximum(np.nan_to_num(scale, nan=0.0), SCALE_FLOOR)
    inv = 1.0 / scale
    cols: list[FloatArray] = [table.at(rows, origins - k) * inv for k in range(N_LAGS)]
    cols += [table.mean(rows, origins, w) * inv for w in ROLL_WINDOWS]
    count = table._span(table.ccount, rows, origins, 28)
    total = table._span(table.csum, rows, origins, 28)
    sq = table._span(table.csq, rows, origins, 28)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = total / count
        var = np.maximum(sq / count - mu * mu, 0.0)
        cols.append(np.where(count > 1, np.sqrt(var), np.nan) * inv)
        cols.append(np.where(count > 0, table._span(table.czero, rows, origins, 28) / count,
                             np.nan))
    cols.append(np.log1p(scale))
    target = origins + steps
    weeks_back = 7 * ((steps + 6) // 7)  # the latest same weekday at or before the origin
    cols.append(table.at(rows, target - weeks_back) * inv)
    same = [table.at(rows, target - weeks_back - 7 * k) for k in range(4)]
    with np.errstate(invalid="ignore"):
        stacked = np.stack(same)
        n_ok = np.isfinite(stacked).sum(axis=0)
        same_mean = np.where(n_ok > 0, np.nansum(stacked, axis=0) / np.maximum(n_ok, 1),
                             np.nan)
    cols.append(same_mean * inv)
    cols.append(table.mean(rows, target - YEAR + 3, 7) * inv)
    cols.append(table.mean(rows, origins - YEAR, 28) * inv)
    cols += _calendar_columns(origins, steps, kinds, dates, calendar)
    if covariates is not None:
        cols += _covariate_columns(covariates, rows, origins, origins + steps, kinds, price)
    if holiday is not None:
        cols += _holiday_columns(holiday, rows, origins, origins + steps, kinds)
    return np.stack(cols, axis=1), scale


def _calendar_columns(origins: NDArray[np.intp], steps: NDArray[np.intp],
                      kinds: NDArray[np.intp], dates: NDArray[np.datetime64],
                      calendar: str) -> list[FloatArray]:
    """The last 7 FEATURE_NAMES (step, kind, target weekday/month/holiday, origin weekday,
    holidays over the span) of rows (origin, step, kind) on the columns of `dates`."""
    target = origins + steps
    target_days = dates[_clip(target, 0, dates.size - 1)]
    ordinal = (target_days - EPOCH).astype(np.int64)
    origin_ordinal = (dates[origins] - EPOCH).astype(np.int64)
    hol = holiday_flags(dates, calendar)
    hol_cum = np.concatenate([[0.0], np.cumsum(hol)])
    span_hol = hol_cum[_clip(target + 1, 0, dates.size)] - hol_cum[origins + 1]
    return [
        steps.astype(np.float64),
        kinds.astype(np.float64),
        ((ordinal + 3) % 7).astype(np.float64),
        (target_days.astype("datetime64[M]").astype(np.int64) % 12).astype(np.float64),
        hol[_clip(target, 0, dates.size - 1)],
        ((origin_ordinal + 3) % 7).astype(np.float64),
        span_hol,
    ]


@lru_cache(maxsize=256)
def _serving_calendar(days: tuple[int, ...], horizon: int, calendar: str) -> FloatArray:
    """(2H, 7) calendar features of the serving grid from the origin day `days[0]` (the
    origin and the days after it, as day numbers): one stream day's are every batch's."""
    steps, kinds, _ = serving_grid(0, horizon)
    dates = np.array(days, dtype="datetime64[D]")
    out = np.stack(_calendar_columns(np.zeros(steps.size, np.intp), steps, kinds, dates,
                                     calendar), axis=1)
    out.flags.writeable = False
    return out


def serving_grid(n: int, horizon: int) -> tuple[NDArray[np.intp], NDArray[np.intp],
                                                NDArray[np.intp]]:
    """(steps, kinds, rows) of the rows a forecast from the end of `n` windows predicts:
    per series, steps 1..horizon of the daily target (kind 0), then of the cumulative one
    (kind 1); `steps` and `kinds` are one series' (2 * horizon,), `rows` all (n * 2H,)."""
    steps = np.tile(np.arange(1, horizon + 1), 2)
    kinds = np.repeat([0, 1], horizon)
    return steps, kinds, np.repeat(np.arange(n), 2 * horizon)


SERVING_CHUNK = 256  # series per block of serving_features: its day-major tables stay in cache


def serving_features(
    values: FloatArray,
    horizon: int,
    dates: NDArray[np.datetime64],
    calendar: str = "uk",
    covariates: tuple[FloatArray, FloatArray] | None = None,
    price: bool = False,
    out: FloatArray | None = None,
    holiday: FloatArray | None = None,
) -> tuple[FloatArray, FloatArray]:
    """`lag_features` of the serving grid (`serving_grid`: every series of `values` (n, T)
    from its last day, steps 1..`horizon`, daily then cumulative), bit for bit, and each
    series' scale (n,) (lag_features repeats it per row).

    Why a second path (it was ~40% of the served model's CPU per forecast): every row of a
    series shares its origin, so 36 of the 46 features are one value per series
    (lag_features computes them once per row, 2H times) and the calendar ones one per
    (step, kind); the cumulative sums are built day-major (T, series), where numpy's running
    sum is vectorised across series, a block of SERVING_CHUNK series at a time (tables of
    all series at once were megabytes, freshly paged in on every call). The arithmetic of
    each number is lag_features' own (the same operands in the same order), so the trees see
    the same bits (tests/unit/test_serving_features.py checks it on integer and
    real-valued demand, with and without covariates). `out`: the (n, 2H, F) array to fill
    (the result is its (n * 2H, F) view)."""
    n, t = values.shape
    steps, kinds, rows = serving_grid(n, horizon)
    o = t - 1  # every row's origin
    # the calendar of the targets from the origin on: the same numbers as over all `dates`
    # (positions relative to the origin, clipped at the same last date; the holidays over
    # a span are counts), for a fraction of the holiday look-ups
    calendar_cols = _serving_calendar(tuple(dates[o:].astype(np.int64).tolist()), horizon,
                                      calendar)
    base = FEATURE_NAMES.index("step")  # FEATURE_NAMES before the calendar ones
    width = len(FEATURE_NAMES)
    if covariates is not None:
        width += len(PROMO_FEATURES) + len(PRICE_FEATURES) * price
    first_holiday = width
    if holiday is not None:
        width += len(HOLIDAY_FEATURES)
    x = np.empty((n, steps.size, width)) if out is None else out
    if x.shape != (n, steps.size, width):
        raise ValueError(f"out must be {(n, steps.size, width)}, got {x.shape}")
    x[:, :, base : base + calendar_cols.shape[1]] = calendar_cols[None]
    scale = np.empty(n)
    for a in range(0, n, SERVING_CHUNK):
        b = min(a + SERVING_CHUNK, n)
        scale[a:b] = _serving_block(values[a:b], steps, x[a:b])
    if covariates is not None:
        extra = _covariate_columns(covariates, rows, np.full(rows.size, o),
                                   np.tile(o + steps, n), np.tile(kinds, n), price)
        x[:, :, len(FEATURE_NAMES) : first_holiday] = np.stack(extra, axis=1).reshape(
            n, steps.size, -1)
    if holiday is not None:
        extra = _holiday_columns(holiday, rows, np.full(rows.size, o), np.tile(o + steps, n),
                                 np.tile(kinds, n))
        x[:, :, first_holiday:] = np.stack(extra, axis=1).reshape(n, steps.size, -1)
    return x.reshape(n * steps.size, width), scale


PREFIX_LOOP_SERIES = 64  # from this many series on, prefix sums by a loop over days


def _prefix_rows(vt: FloatArray, need: NDArray[np.intp]) -> FloatArray:
    """Rows `need` (sorted) of LagTable's cumulative tables csum, ccount and csq of the
    day-major values `vt` (T, b): (len(need), 3, b), row r the sums over days < r.

    Each sum is the running one, day after day (`np.add.accumulate`'s order), as LagTable
    computes it. The days before the block's first observed one add +0.0 to +0.0: their
    rows are 0 and the running sums start there (a young series' ring is mostly such
    days). For a few series, `np.cumsum` along the days; for more, one vectorised add per
    day across all series and tables (numpy runs an accumulate along the days as a scalar
    chain per series, ~3 ns a day, 4x the cost of every other feature), keeping only the
    rows the features read."""
    t, b = vt.shape
    finite = np.isfinite(vt)
    seen = finite.any(axis=1)
    first = int(np.argmax(seen)) if seen.any() else t  # days before it: none observed
    days = np.empty((t - first, 3, b))
    np.copyto(days[:, 0], vt[first:], where=finite[first:])
    days[:, 0][~finite[first:]] = 0.0
    days[:, 1] = finite[first:]
    np.multiply(days[:, 0], days[:, 0], out=days[:, 2])
    out = np.zeros((need.size, 3, b))
    late = need > first  # rows over some observed day (the others stay 0)
    if b < PREFIX_LOOP_SERIES:
        # tables[j]: the sums over days < first + j; the first observed day is added to
        # +0.0 when earlier days were (+0.0) zeros, and starts the sum when it is day 0
        tables = np.zeros((t - first + 1, 3, b))
        if first == 0:
            np.cumsum(days, axis=0, out=tables[1:])
        else:
            np.cumsum(np.concatenate([tables[:1], days]), axis=0, out=tables)
        out[late] = tables[need[late] - first]
        return out
    acc = np.zeros((3, b))
    k = first  # acc holds the sums over days < k
    for i in np.flatnonzero(late).tolist():
        row = int(need[i])
        if row > k:
            if k == 0:
                acc[:] = days[0]  # the running sum starts from day 0, as cumsum's
                k = 1
            for day in range(k - first, row - first):
                np.add(acc, days[day], out=acc)
            k = row
        out[i] = acc
    return out


@dataclass(frozen=True)
class _ServingPlan:
    """What `_serving_block` reads for windows of `t` days and a horizon: which rows of the
    prefix sums, which day of each lag and same-weekday feature. It depends on (t, horizon)
    only, so it is made once (`_plan`), not per call."""

    need: NDArray[np.intp]  # prefix-sum rows read (sorted)
    hi: NDArray[np.intp]  # per span: positions in `need` of its end and start rows
    lo: NDArray[np.intp]
    lags: NDArray[np.intp]  # (N_LAGS,) days of lag_k, clipped
    lags_ok: NDArray[np.bool_]
    same: NDArray[np.intp]  # (4 * 2H,) days of the same weekday 1..4 weeks back, clipped
    same_ok: NDArray[np.bool_]
    lo28: int  # first day of the 28-day span


# the spans `_plan` lays out, in this order: the scale's, ROLL_WINDOWS', the year-ago origin
# span, then the year-ago target span of each of the 2H rows
_SPAN_SCALE, _SPAN_ROLL, _SPAN_YEAR_ORIGIN, _SPAN_YEAR_TARGET = 0, 1, 1 + len(ROLL_WINDOWS), \
    2 + len(ROLL_WINDOWS)
_SPAN_28 = _SPAN_ROLL + ROLL_WINDOWS.index(28)


@lru_cache(maxsize=64)
def _plan(t: int, horizon: int) -> _ServingPlan:
    steps, _, _ = serving_grid(0, horizon)
    o = t - 1
    target = o + steps
    ends = np.concatenate([np.full(1 + len(ROLL_WINDOWS), o), [o - YEAR], target - YEAR + 3])
    widths = np.concatenate([[SCALE_DAYS], ROLL_WINDOWS, [28], np.full(steps.size, 7)])
    hi = np.minimum(np.maximum(ends + 1, 0), t)  # LagTable._span's bounds
    lo = np.minimum(np.maximum(ends + 1 - widths, 0), t)
    need = np.unique(np.concatenate([hi, lo]))
    lags = o - np.arange(N_LAGS)
    weeks_back = 7 * ((steps + 6) // 7)  # the latest same weekday at or before the origin
    same = np.concatenate([target - weeks_back - 7 * k for k in range(4)])
    return _ServingPlan(need, np.searchsorted(need, hi), np.searchsorted(need, lo),
                        _clip(lags, 0, t - 1), (lags >= 0) & (lags < t),
                        _clip(same, 0, t - 1), (same >= 0) & (same < t),
                        min(max(o + 1 - 28, 0), t))


def _serving_block(values: FloatArray, steps: NDArray[np.intp], x: FloatArray) -> FloatArray:
    """The demand features of series `values` (b, T) into `x` (b, 2H, F)[..., :42];
    returns their scale (b,) (serving_features). Each number is computed as lag_features
    computes it (LagTable.mean / _span / at), all spans of a kind in one array operation."""
    n, t = values.shape
    plan = _plan(t, steps.size // 2)
    vt = np.ascontiguousarray(values.T)  # (T, b): day-major
    prefix = _prefix_rows(vt, plan.need)  # (len(need), 3, b): csum, ccount, csq
    count = prefix[plan.hi, 1] - prefix[plan.lo, 1]  # (spans, b)
    total = prefix[plan.hi, 0] - prefix[plan.lo, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(count > 0, total / count, np.nan)
    scale = np.maximum(np.nan_to_num(means[_SPAN_SCALE], nan=0.0), SCALE_FLOOR)
    inv = 1.0 / scale

    def at(days: NDArray[np.intp], ok: NDArray[np.bool_]) -> FloatArray:
        """LagTable.at of `days` (clipped; `ok`: inside the grid), day-major."""
        out: FloatArray = vt[days]
        return out if ok.all() else np.where(ok[:, None], out, np.nan)

    per_series = np.empty((n, N_LAGS + len(ROLL_WINDOWS) + 3))
    per_series[:, :N_LAGS] = (at(plan.lags, plan.lags_ok) * inv).T
    per_series[:, N_LAGS : N_LAGS + len(ROLL_WINDOWS)] = (
        means[_SPAN_ROLL:_SPAN_YEAR_ORIGIN] * inv).T
    count28, total28 = count[_SPAN_28], total[_SPAN_28]
    i28 = _SPAN_28
    sq = prefix[plan.hi[i28], 2] - prefix[plan.lo[i28], 2]
    zeros = (vt[plan.lo28:] == 0.0).sum(axis=0, dtype=np.float64)  # a count: exact anyhow
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = total28 / count28
        var = np.maximum(sq / count28 - mu * mu, 0.0)
        per_series[:, N_LAGS + 4] = np.where(count28 > 1, np.sqrt(var), np.nan) * inv
        per_series[:, N_LAGS + 5] = np.where(count28 > 0, zeros / count28, np.nan)
    per_series[:, N_LAGS + 6] = np.log1p(scale)
    same = at(plan.same, plan.same_ok).reshape(4, steps.size, n)  # (4, 2H, b)
    with np.errstate(invalid="ignore"):
        n_ok = np.isfinite(same).sum(axis=0)
        same_mean = np.where(n_ok > 0, np.nansum(same, axis=0) / np.maximum(n_ok, 1), np.nan)
    k = per_series.shape[1]
    x[:, :, :k] = per_series[:, None, :]
    x[:, :, k] = (same[0] * inv).T
    x[:, :, k + 1] = (same_mean * inv).T
    x[:, :, k + 2] = (means[_SPAN_YEAR_TARGET:] * inv).T
    x[:, :, k + 3] = (means[_SPAN_YEAR_ORIGIN] * inv)[:, None]
    return scale


def _covariate_columns(covariates: tuple[FloatArray, FloatArray], rows: NDArray[np.intp],
                       origins: NDArray[np.intp], target: NDArray[np.intp],
                       kinds: NDArray[np.intp], price: bool) -> list[FloatArray]:
    """The PROMO_FEATURES (+ PRICE_FEATURES) of rows whose targets are column `target` of
    the covariates.
    A daily row's span features are its target day's values: a day's forecast reads the
    covariates of that day (and of the origin), not those of the days between."""
    promo, ratio = covariates
    last = promo.shape[1] - 1
    hi = np.clip(target + 1, 0, last + 1)
    lo = np.clip(origins + 1, 0, last + 1)
    days = np.maximum(hi - lo, 1)
    daily = kinds == 0

    def at(a: FloatArray, col: NDArray[np.intp]) -> FloatArray:
        out: FloatArray = a[rows, np.clip(col, 0, last)]
        return out

    def span(a: FloatArray) -> FloatArray:
        cum = np.concatenate([np.zeros((a.shape[0], 1)), np.cumsum(a, axis=1)], axis=1)
        out: FloatArray = np.where(daily, at(a, target), (cum[rows, hi] - cum[rows, lo]) / days)
        return out

    promo_cum = np.concatenate([np.zeros((promo.shape[0], 1)), np.cumsum(promo, axis=1)],
                               axis=1)
    recent_lo = np.clip(origins + 1 - 28, 0, last + 1)
    cols = [
        at(promo, target),
        at(promo, origins),
        span(promo),
        (promo_cum[rows, lo] - promo_cum[rows, recent_lo]) / np.maximum(lo - recent_lo, 1),
    ]
    if price:
        cols += [at(ratio, target), span(ratio)]
    return cols


def _holiday_columns(holiday: FloatArray, rows: NDArray[np.intp], origins: NDArray[np.intp],
                     target: NDArray[np.intp], kinds: NDArray[np.intp]) -> list[FloatArray]:
    """The HOLIDAY_FEATURES of rows whose targets are column `target` of `holiday`: the
    target day's flag, and the share of holidays over (origin, target] (a daily row's: its
    target day's flag, as the promotion span)."""
    last = holiday.shape[1] - 1
    hi = np.clip(target + 1, 0, last + 1)
    lo = np.clip(origins + 1, 0, last + 1)
    cum = np.concatenate([np.zeros((holiday.shape[0], 1)), np.cumsum(holiday, axis=1)], axis=1)
    at_target: FloatArray = holiday[rows, np.clip(target, 0, last)]
    share: FloatArray = np.where(kinds == 0, at_target,
                                 (cum[rows, hi] - cum[rows, lo]) / np.maximum(hi - lo, 1))
    return [at_target, share]
