"""The year-ago head inputs of a batch of series at forecast time, as one matrix product.

`features.year_ago_features` is the definition (training computes it over every origin of
a panel). At forecast time a batch has one or a few origin days and many series: which
days of the span each step averages (its same weekdays a year earlier that fall in its
month) and the 28 days of the year-ago level depend only on the origin day, so they are a
0/1 matrix built once per day, and the sums and counts of all series are one product of
[values | seen] with it. Same numbers as `year_ago_features`: a test compares them, and
`agrees` checks it once per horizon at run time (the forecaster falls back to the
definition, with a warning, should the two ever part).
"""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from forecasting._numeric import FloatArray
from forecasting.lstm.features import (
    SCALE_FLOOR,
    YEAR,
    YEAR_BASE_DAYS,
    YEAR_CLIP,
    check_gaps,
    weekday_of_level,
    year_ago_features,
    year_ago_span,
    year_offsets,
)

__all__ = ["agrees", "year_ago_rows"]

log = logging.getLogger(__name__)


@lru_cache(maxsize=16)
def agrees(horizon: int, weeks: int = 1, gaps: str = "zero") -> bool:
    """Whether `year_ago_rows` gives `year_ago_features`' numbers on a random probe: 64
    series with missing days, spikes, no year-ago level and a gap a year ago, origins over
    70 days around month ends (once per horizon, `weeks`, `gaps` and process)."""
    rng = np.random.default_rng(0)
    n = 64
    span = rng.poisson(4.0, (n, year_ago_span(horizon, weeks))).astype(np.float64)
    span[rng.random(span.shape) < 0.2] = np.nan
    span[:4, :YEAR_BASE_DAYS] = np.nan
    span[4:8] *= 100.0
    span[8:12, YEAR_BASE_DAYS:] = np.nan  # the level a year ago, no day after it
    scale = rng.gamma(2.0, 1.0, n) + 0.01
    origins = np.datetime64("2011-01-20") + (np.arange(n) * 1.1).astype("timedelta64[D]")
    ok = bool(np.allclose(year_ago_rows(span, scale, origins, horizon, weeks, gaps),
                          year_ago_features(span, scale, origins, horizon, weeks, gaps),
                          rtol=1e-9, atol=1e-12))
    if not ok:
        log.warning("year_ago_rows differs from features.year_ago_features; using the latter")
    return ok


@lru_cache(maxsize=256)
def _weights(day: int, horizon: int, weeks: int) -> FloatArray:
    """(year_ago_span, H + 1) for origin `day` (days since 1970-01-01): column h-1 marks
    the same-weekday days of step h in its month, the last column the 28 days of the
    year-ago level (shared: not to be written)."""
    out = np.zeros((year_ago_span(horizon, weeks), horizon + 1))
    origin = np.datetime64(day, "D")
    steps = np.arange(1, horizon + 1)
    offsets = year_offsets(weeks)
    target = (origin + steps.astype("timedelta64[D]")).astype("datetime64[M]").astype(np.int64)
    shift = steps[:, None] + offsets[None, :]  # (H, K): day origin + shift - YEAR
    then = (origin + (shift - YEAR).astype("timedelta64[D]")).astype("datetime64[M]")
    h_idx, k_idx = np.nonzero(then.astype(np.int64) + 12 == target[:, None])
    out[YEAR_BASE_DAYS - 1 + shift[h_idx, k_idx], h_idx] = 1.0
    out[:YEAR_BASE_DAYS, -1] = 1.0
    return out


def year_ago_rows(span: FloatArray, scale: FloatArray, origins: NDArray[np.datetime64],
                  horizon: int, weeks: int = 1, gaps: str = "zero") -> FloatArray:
    """`features.year_ago_features(span, scale, origins, horizon, weeks, gaps)` for span
    (n, S), scale (n,) and origins (n,). The sums and counts run as matrix products (BLAS
    threads bounded by the forecaster's `cap_threads`) in the span's precision: float64
    gives the definition's numbers, float32 (the ring's) the same within float32 rounding,
    faster."""
    check_gaps(gaps)
    n = span.shape[0]
    x = np.ascontiguousarray(span)
    both = np.empty((2 * n, x.shape[1]), dtype=x.dtype)  # [values | seen]: one product
    both[:n] = x
    both[n:] = x == x
    np.nan_to_num(both[:n], copy=False, nan=0.0)  # missing days (NaN; a ring holds no inf)
    out_sc = np.empty((2 * n, horizon + 1), dtype=x.dtype)
    days = np.asarray(origins, dtype="datetime64[D]")
    distinct = days[:1] if n == 0 or bool(np.all(days == days[0])) else np.unique(days)
    for day in distinct:
        w = _weights(int(day.astype(np.int64)), horizon, weeks).astype(x.dtype)
        if distinct.size == 1:
            np.matmul(both, w, out=out_sc)
        else:
            rows = np.tile(days == day, 2)
            out_sc[rows] = both[rows] @ w
    sums, counts = out_sc[:n], out_sc[n:]
    # Unseen days were zeroed: a mean over no day is 0 / 1 = 0, as in the definition.
    means = np.divide(sums, np.maximum(counts, 1.0), out=sums)
    week, base = means[:, :horizon], means[:, -1]
    has_base = counts[:, -1] > 0
    if gaps == "unknown":  # a step with no day seen a year ago: no year-ago information
        blind = has_base & np.any(counts[:, :horizon] == 0, axis=1)
        if blind.any():
            has_base &= ~blind
            week[blind] = 0.0
            base[blind] = 0.0
    elif gaps == "weekday":  # ... reads its weekday's mean over the year-ago level's days
        gap = has_base[:, None] & (counts[:, :horizon] == 0)
        rows = np.flatnonzero(gap.any(axis=1))
        if rows.size:
            pick = weekday_of_level(horizon).astype(x.dtype)
            level = both[:, :YEAR_BASE_DAYS]
            sums_w, counts_w = level[rows] @ pick, level[n + rows] @ pick
            profile = np.where(counts_w > 0, sums_w / np.maximum(counts_w, 1.0),
                               base[rows, None])
            week[rows] = np.where(gap[rows], profile, week[rows])
    scale_x = np.asarray(scale, dtype=x.dtype)
    out = np.empty((n, 2 * horizon + 2), dtype=x.dtype)
    np.divide(week, scale_x[:, None], out=out[:, :horizon])
    np.divide(base, scale_x, out=out[:, horizon])
    shape = out[:, horizon + 1 : 2 * horizon + 1]
    np.divide(week, np.maximum(base, SCALE_FLOOR)[:, None], out=shape)
    shape *= has_base[:, None]  # 0 without a year-ago level
    np.minimum(out[:, :-1], YEAR_CLIP, out=out[:, :-1])
    out[:, -1] = has_base
    result: FloatArray = out
    return result
