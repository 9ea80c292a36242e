"""Private vectorised helpers: NaN-aware row quantiles, recent values, normal quantiles."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

__all__ = [
    "FloatArray",
    "masked_mean_var",
    "nan_row_quantiles",
    "normal_quantiles",
    "recent_values",
]


def nan_row_quantiles(x: FloatArray, levels: FloatArray) -> tuple[FloatArray, NDArray[np.intp]]:
    """Quantiles of each row of `x` (n, m) ignoring NaNs, numpy's 'linear' method.

    Returns (quantiles (n, Q), count of finite values per row (n,)). Rows without a finite value
    get NaN quantiles. One sort of the whole matrix, no Python loop over rows (np.nanquantile
    loops over rows internally, which is too slow for thousands of series).
    """
    n, m = x.shape
    q = levels.shape[0]
    counts = np.isfinite(x).sum(axis=1).astype(np.intp)
    if m == 0:
        return np.full((n, q), np.nan), counts
    ordered = np.sort(x, axis=1)  # NaNs sort to the end of each row
    pos = (np.maximum(counts, 1) - 1)[:, None] * levels[None, :]
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, np.maximum(counts - 1, 0)[:, None])
    frac = pos - lo
    lo_val = np.take_along_axis(ordered, lo, axis=1)
    hi_val = np.take_along_axis(ordered, hi, axis=1)
    out = lo_val + (hi_val - lo_val) * frac
    out[counts == 0] = np.nan
    return out, counts


def masked_mean_var(x: FloatArray, ddof: int = 1) -> tuple[FloatArray, FloatArray]:
    """Row mean and variance of `x` (n, m) ignoring NaNs; 0 where too few values (no warnings)."""
    finite = np.isfinite(x)
    counts = finite.sum(axis=1)
    filled = np.where(finite, x, 0.0)
    mean = filled.sum(axis=1) / np.maximum(counts, 1)
    dev = np.where(finite, x - mean[:, None], 0.0)
    var = (dev * dev).sum(axis=1) / np.maximum(counts - ddof, 1)
    var = np.where(counts > ddof, var, 0.0)
    return mean, var


def recent_values(x: FloatArray, k: int) -> FloatArray:
    """The last `k` finite values of each row of `x` (n, L), oldest first, NaN-padded on the left.

    Missing buckets inside the history are skipped, so row i holds its min(k, count_i) most
    recent observations in the rightmost columns.
    """
    n, length = x.shape
    if length < k:
        x = np.concatenate([np.full((n, k - length), np.nan), x], axis=1)
    # A stable sort on "is finite" moves NaNs left and keeps observations in time order.
    order = np.argsort(np.isfinite(x), axis=1, kind="stable")
    compacted: FloatArray = np.take_along_axis(x, order, axis=1)
    return compacted[:, -k:]


def normal_quantiles(mean: FloatArray, std: FloatArray, levels: FloatArray) -> FloatArray:
    """Quantiles (..., Q) of Normal(mean, std) clipped at 0 (demand is never negative)."""
    dist = NormalDist()
    z = np.array([dist.inv_cdf(float(level)) for level in levels])
    out: FloatArray = np.maximum(mean[..., None] + std[..., None] * z, 0.0)
    return out
