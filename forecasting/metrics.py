"""Forecast accuracy metrics on plain arrays: MASE, WAPE, pinball loss, interval coverage.

All functions broadcast their inputs, ignore pairs where the actual or the forecast is NaN,
and return NaN (never a warning or an exception) where a ratio has a zero denominator, so
per-series results can be pooled with np.nanmean. `axis` follows numpy: None pools
everything into one number; an int or tuple reduces those axes and keeps the rest.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["coverage", "mase", "pinball", "wape"]

Axis = int | tuple[int, ...] | None
FloatOrArray = float | NDArray[np.float64]


def _as_float(x: ArrayLike) -> NDArray[np.float64]:
    return np.asarray(x, dtype=np.float64)


def _result(x: NDArray[np.float64]) -> FloatOrArray:
    return float(x) if x.ndim == 0 else x


def _safe_ratio(num: NDArray[np.float64], den: NDArray[np.float64]) -> NDArray[np.float64]:
    ok = den > 0
    out = np.full(np.broadcast_shapes(num.shape, den.shape), np.nan)
    np.divide(num, den, out=out, where=ok)
    return out


def _masked_mean(values: NDArray[np.float64], valid: NDArray[np.bool_], axis: Axis) -> FloatOrArray:
    total = np.where(valid, values, 0.0).sum(axis=axis)
    count = valid.sum(axis=axis).astype(np.float64)
    return _result(_safe_ratio(np.asarray(total), np.asarray(count)))


def mase(
    y_true: ArrayLike, y_pred: ArrayLike, insample: ArrayLike, season: int = 7
) -> FloatOrArray:
    """Mean absolute scaled error per series (last axis = time).

    MASE = mean_h |y_true - y_pred| / mean_t |insample[t] - insample[t - season]|: the error
    relative to the in-sample error of seasonal naive. `y_true`/`y_pred` are (..., horizon),
    `insample` is (..., history) with the same leading axes. Returns a float for 1-D inputs,
    an array over the leading axes otherwise; NaN where the scale is 0 (a constant or
    too-short history) or nothing is observed.
    """
    if season < 1:
        raise ValueError(f"season must be >= 1, got {season}")
    yt, yp, hist = _as_float(y_true), _as_float(y_pred), _as_float(insample)
    err = np.abs(yt - yp)
    num = np.asarray(_masked_mean(err, np.isfinite(err), axis=-1), dtype=np.float64)
    if hist.shape[-1] <= season:
        scale = np.full(hist.shape[:-1], np.nan)
    else:
        diffs = np.abs(hist[..., season:] - hist[..., :-season])
        scale = np.asarray(_masked_mean(diffs, np.isfinite(diffs), axis=-1), dtype=np.float64)
    return _result(_safe_ratio(num, np.nan_to_num(scale, nan=0.0)))


def wape(y_true: ArrayLike, y_pred: ArrayLike, axis: Axis = None) -> FloatOrArray:
    """Weighted absolute percentage error: sum |y_true - y_pred| / sum |y_true|.

    Pooled over everything by default (the portfolio WAPE); NaN when actual demand sums to 0.
    """
    yt, yp = _as_float(y_true), _as_float(y_pred)
    err = np.abs(yt - yp)
    valid = np.isfinite(err)
    num = np.where(valid, err, 0.0).sum(axis=axis)
    den = np.where(valid, np.abs(yt), 0.0).sum(axis=axis)
    return _result(_safe_ratio(np.asarray(num), np.asarray(den)))


def pinball(
    y_true: ArrayLike, quantiles: ArrayLike, levels: ArrayLike, axis: Axis = None
) -> FloatOrArray:
    """Pinball (quantile) loss averaged over levels, then over `axis` of y_true's shape.

    `quantiles` is (..., Q) matching `y_true` (...) plus the level axis; `levels` is (Q,).
    Per level: tau * (y - q) if y >= q else (1 - tau) * (q - y). At tau = 0.5 this is half
    the absolute error. axis=() returns the per-observation loss.
    """
    yt, qs, tau = _as_float(y_true), _as_float(quantiles), _as_float(levels)
    if tau.ndim != 1 or qs.shape[-1:] != tau.shape:
        raise ValueError(f"quantiles' last axis {qs.shape} must match levels {tau.shape}")
    diff = yt[..., None] - qs
    loss = np.maximum(tau * diff, (tau - 1.0) * diff)
    valid = np.asarray(np.isfinite(loss).all(axis=-1), dtype=bool)
    per_obs = np.where(valid, np.where(np.isfinite(loss), loss, 0.0).mean(axis=-1), 0.0)
    return _masked_mean(per_obs, valid, axis)


def coverage(y_true: ArrayLike, lo: ArrayLike, hi: ArrayLike, axis: Axis = None, *,
             ties: float = 1.0) -> FloatOrArray:
    """Share of actuals inside [lo, hi] (both ends included); nominal for (q_a, q_b) is b - a.

    `ties` is what an actual exactly on an interval end counts for: 1 (the default, closed
    interval) or 0.5. For counts the closed interval over-covers a calibrated forecast (with
    half the days at 0, q0.1 = 0 and every zero is "inside"); counting ties half is the
    usual discrete correction (the randomised PIT of Czado, Gneiting & Held 2009, roughly).
    """
    yt, lower, upper = _as_float(y_true), _as_float(lo), _as_float(hi)
    yt, lower, upper = np.broadcast_arrays(yt, lower, upper)
    valid = np.isfinite(yt) & np.isfinite(lower) & np.isfinite(upper)
    strict = ((lower < yt) & (yt < upper)).astype(np.float64)
    tie = ((lower == yt) | (yt == upper)) & (lower <= upper)
    inside = strict + ties * tie
    return _masked_mean(inside, valid, axis)
