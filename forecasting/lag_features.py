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

import numpy as np
from numpy.typing import NDArray

from forecasting._numeric import FloatArray
from forecasting.lstm.features import EPOCH, holiday_flags

__all__ = ["COVARIATE_FEATURES", "FEATURE_NAMES", "PRICE_FEATURES", "PROMO_FEATURES",
           "SCALE_DAYS", "SCALE_FLOOR", "LagTable", "lag_features"]

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
) -> tuple[FloatArray, FloatArray]:
    """Features (m, len(FEATURE_NAMES)) and the scale (m,) of rows (series, origin, step, kind).

    `origins` index the columns of `table.values`; `dates` (T + horizon,) gives the date of
    each column and of the days after the grid (for calendar features of the targets).
    `covariates`: (promo, price_ratio), each (n, T + horizon) on the columns of `dates`:
    the PROMO_FEATURES are appended, then the PRICE_FEATURES if `price`.
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
    target_days = dates[_clip(target, 0, dates.size - 1)]
    ordinal = (target_days - EPOCH).astype(np.int64)
    origin_ordinal = (dates[origins] - EPOCH).astype(np.int64)
    hol = holiday_flags(dates, calendar)
    hol_cum = np.concatenate([[0.0], np.cumsum(hol)])
    span_hol = hol_cum[_clip(target + 1, 0, dates.size)] - hol_cum[origins + 1]
    cols += [
        steps.astype(np.float64),
        kinds.astype(np.float64),
        ((ordinal + 3) % 7).astype(np.float64),
        (target_days.astype("datetime64[M]").astype(np.int64) % 12).astype(np.float64),
        hol[_clip(target, 0, dates.size - 1)],
        ((origin_ordinal + 3) % 7).astype(np.float64),
        span_hol,
    ]
    if covariates is not None:
        cols += _covariate_columns(covariates, rows, origins, target, kinds, price)
    return np.stack(cols, axis=1), scale


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
