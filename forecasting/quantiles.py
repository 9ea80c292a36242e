"""Reading a quantile forecast: the value at a level, the probability beyond a value.

Pure numpy over quantile arrays whose last axis follows strictly increasing `levels` in (0, 1).
The one place the project interpolates between quantile levels: `QuantileForecast`, the
periodic review (`optimizer.review`) and the stream's web view all call `quantile_at`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from forecasting._numeric import FloatArray

__all__ = ["exceedance_probability", "quantile_at"]


def quantile_at(values: npt.ArrayLike, levels: npt.ArrayLike, level: float) -> FloatArray:
    """The quantile at `level`, linear in the level along the last axis of `values`.

    `values[..., k]` is the quantile at `levels[k]`. Levels outside the given ones are clamped
    to the first/last quantile (no tail extrapolation): a forecast says nothing beyond its
    extreme levels. At a given level the result is that quantile exactly.
    """
    v = np.asarray(values, dtype=np.float64)
    lv = np.asarray(levels, dtype=np.float64)
    if lv.size == 1 or level <= lv[0]:
        return v[..., 0]
    if level >= lv[-1]:
        return v[..., -1]
    i = int(np.searchsorted(lv, level, side="right")) - 1
    w = (level - lv[i]) / (lv[i + 1] - lv[i])
    out: FloatArray = v[..., i] * (1.0 - w) + v[..., i + 1] * w
    return out


def exceedance_probability(values: npt.ArrayLike, levels: npt.ArrayLike,
                           x: npt.ArrayLike) -> FloatArray:
    """P(demand > x[i]) read off the quantiles `values[i]` (n, Q) at `levels` (Q,), per row.

    Linear in the level between two quantiles; beyond the extreme quantiles the tail mass
    the forecast leaves there (1 - last level above, 1 - first level below, and 1 below any
    negative x, since demand is never negative).
    """
    v = np.asarray(values, dtype=np.float64)
    lv = np.asarray(levels, dtype=np.float64)
    xs = np.asarray(x, dtype=np.float64)
    below_first = xs < v[:, 0]
    from_last = xs >= v[:, -1]
    # j: the last level whose quantile is <= x (quantiles are non-decreasing along a row)
    j = np.clip((v <= xs[:, None]).sum(axis=1) - 1, 0, lv.size - 2)
    r = np.arange(v.shape[0])
    lo, hi = v[r, j], v[r, j + 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        inside = lv[j] + (lv[j + 1] - lv[j]) / (hi - lo) * (xs - lo)
    p = 1.0 - inside
    p = np.where(from_last, 1.0 - lv[-1], p)
    out: FloatArray = np.where(below_first, np.where(xs >= 0, 1.0 - lv[0], 1.0), p)
    return out
