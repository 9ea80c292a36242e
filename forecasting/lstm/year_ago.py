"""The year-ago head inputs of a batch of series at forecast time, as two matrix products.

`features.year_ago_features` is the definition (training computes it over every origin of
a panel). At forecast time a batch has one or a few origin days and many series: which
days of the span each step averages (the same weekdays, the days of its month) depends only
on the origin day, so it is a 0/1 matrix built once per day, and the sums and counts of all
series are `span @ matrix` and `finite @ matrix` (~20x faster than the gathers and masks at
16k series). Same numbers as `year_ago_features` (a test compares them).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from forecasting._numeric import FloatArray
from forecasting.lstm.features import (
    SCALE_FLOOR,
    YEAR,
    YEAR_BASE_DAYS,
    YEAR_CLIP,
    YEAR_MONTH,
    YEAR_WEEKS,
    year_ago_span,
)

__all__ = ["year_ago_rows"]


@lru_cache(maxsize=256)
def _weights(day: int, horizon: int) -> FloatArray:
    """(year_ago_span, 2H + 1) for origin `day` (days since 1970-01-01): column h-1 marks
    the same-weekday days of step h, column H+h-1 the days of its month, the last column
    the 28 days of the year-ago level; read-only."""
    width = year_ago_span(horizon)
    out = np.zeros((width, 2 * horizon + 1))
    origin = np.datetime64(day, "D")
    steps = np.arange(1, horizon + 1)
    target = (origin + steps.astype("timedelta64[D]")).astype("datetime64[M]").astype(np.int64)
    for col0, offsets in ((0, np.asarray(YEAR_WEEKS)),
                          (horizon, np.arange(YEAR_MONTH[0], YEAR_MONTH[1] + 1))):
        shift = steps[:, None] + offsets[None, :]  # (H, K): day origin + shift - YEAR
        then = (origin + (shift - YEAR).astype("timedelta64[D]")).astype("datetime64[M]")
        same = then.astype(np.int64) + 12 == target[:, None]
        h_idx, k_idx = np.nonzero(same)
        out[YEAR_BASE_DAYS - 1 + shift[h_idx, k_idx], col0 + h_idx] = 1.0
    out[:YEAR_BASE_DAYS, -1] = 1.0
    out.flags.writeable = False
    return out


def year_ago_rows(span: FloatArray, scale: FloatArray, origins: NDArray[np.datetime64],
                  horizon: int) -> FloatArray:
    """`features.year_ago_features(span, scale, origins, horizon)` for span (n, S), scale
    (n,) and origins (n,)."""
    n = span.shape[0]
    seen = np.isfinite(span)
    vals = np.where(seen, span, 0.0)
    fin = seen.astype(np.float64)
    sums = np.empty((n, 2 * horizon + 1))
    counts = np.empty((n, 2 * horizon + 1))
    days = np.asarray(origins, dtype="datetime64[D]")
    distinct = days[:1] if n == 0 or bool(np.all(days == days[0])) else np.unique(days)
    for day in distinct:
        w = _weights(int(day.astype(np.int64)), horizon)
        if distinct.size == 1:
            np.matmul(vals, w, out=sums)
            np.matmul(fin, w, out=counts)
        else:
            rows = days == day
            sums[rows], counts[rows] = vals[rows] @ w, fin[rows] @ w
    means = np.where(counts > 0, sums / np.maximum(counts, 1.0), 0.0)
    week, month, base = means[:, :horizon], means[:, horizon:-1], means[:, -1]
    has_base = counts[:, -1] > 0
    inv_base = np.where(has_base, 1.0 / np.maximum(base, SCALE_FLOOR), 0.0)[:, None]
    out: FloatArray = np.concatenate(
        [np.minimum(week / scale[:, None], YEAR_CLIP),
         np.minimum(base / scale, YEAR_CLIP)[:, None],
         np.minimum(week * inv_base, YEAR_CLIP), np.minimum(month * inv_base, YEAR_CLIP),
         has_base[:, None].astype(np.float64)], axis=-1)
    return out

