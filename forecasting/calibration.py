"""Interval calibration of a quantile forecaster, learned on its training's validation origins
(the LSTM: `forecasting/lstm/calibration.py`; the `lstm_lgbm` mix: `forecasting/combination.py`).

The quantile head is trained with the pinball loss, whose minimiser for a count is the
smallest integer q with P(y <= q) >= tau. On intermittent demand that over-covers the closed
interval [q_lo, q_hi]: with 44% zero days q0.1 = 0 puts every zero "inside". The fix is a
quantile recalibration (Kuleshov, Fenner & Ermon 2018) in the form of conformalised
quantile regression adapted to counts: for each output level tau a source level tau' of the
model's own quantile curve (piecewise linear between its output levels, one extra gap of
linear extrapolation past the ends) is chosen on the validation origins so that

    P(y <  q(tau')) ~= tau  for tau < 0.5,     P(y <= q(tau')) ~= tau  for tau >= 0.5,

after the same post-processing as at inference (x scale, clipped at 0, rounded for counts).
Then the closed central interval [q(tau_lo'), q(tau_hi')] covers tau_hi - tau_lo. For
continuous demand both conditions are the same and a calibrated model keeps tau' = tau (a
tolerance band prefers the unchanged level). Source levels are non-decreasing in tau, so the
quantiles stay monotone. Applying it is one matrix product over the forecast block.

The two tails of a central interval are chosen jointly: coverage of counts moves in steps,
and a step too far at one end is made up at the other. Daily quartiles and median keep their
levels (see INNER). Cumulative (lead-time) quantiles are sums over days, nearly continuous,
and all their levels are recalibrated (`fit_calibration(cumulative=True)`): the restock math
reads them at its service level, and on the backtests their pinball loss dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from forecasting._numeric import FloatArray

__all__ = ["IntervalCalibration", "fit_levels", "interp_weights"]

GRID_STEP = 0.001  # resolution of the source-level search
TOLERANCE = 0.005  # a level whose coverage is this close to nominal is left alone
TAIL_WEIGHT = 0.25  # of each tail's own miss, against the central interval's (see _choose)
INTERVALS = ((0.1, 0.9), (0.025, 0.975))
# Daily levels left to the model: for counts the pinball-optimal quartiles and median are not
# the closed-coverage ones, and they are no interval's ends (UCI: moving them too cost 1.2%
# more pinball loss for the same coverage).
INNER = (0.25, 0.75)


def interp_weights(levels: ArrayLike, source: ArrayLike) -> FloatArray:
    """(Q, K) matrix W with (quantiles (..., Q) @ W)[..., k] = the quantile curve at
    `source[k]`: linear between `levels`, extended linearly by the end segments."""
    tau = np.asarray(levels, dtype=np.float64)
    src = np.asarray(source, dtype=np.float64)
    j = np.clip(np.searchsorted(tau, src, side="right") - 1, 0, tau.size - 2)
    a = (src - tau[j]) / (tau[j + 1] - tau[j])
    w = np.zeros((tau.size, src.size))
    cols = np.arange(src.size)
    w[j, cols] = 1.0 - a
    w[j + 1, cols] += a
    return w


def _bounds(levels: FloatArray) -> tuple[float, float]:
    lo = levels[0] - (levels[1] - levels[0])
    hi = levels[-1] + (levels[-1] - levels[-2])
    return max(lo, GRID_STEP), min(hi, 1.0 - GRID_STEP)


def _post(q: FloatArray, integer: bool) -> FloatArray:
    q = np.maximum(q, 0.0)
    return np.round(q) if integer else q


@dataclass(frozen=True)
class IntervalCalibration:
    """Source levels per output level, for the daily and (optionally) cumulative quantiles.

    `daily` / `cumulative`: tau' for each of `levels` (None: that block is left as is).
    `report`: validation coverage before/after (what training measured), for metadata.
    """

    levels: tuple[float, ...]
    daily: tuple[float, ...] | None
    cumulative: tuple[float, ...] | None = None
    report: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for src in (self.daily, self.cumulative):
            if src is not None and (len(src) != len(self.levels)
                                    or np.any(np.diff(np.asarray(src)) < 0)):
                raise ValueError("source levels must be one non-decreasing tau' per level")
        q = len(self.levels)
        full = np.zeros((2 * q + 1, 2 * q))  # [daily | cumulative | mean] -> the quantiles
        for k, src in enumerate((self.daily, self.cumulative)):
            block = slice(k * q, (k + 1) * q)
            full[block, block] = np.eye(q) if src is None else interp_weights(self.levels, src)
        # float32 as the head computes; a GEMM is the cheapest gather + lerp on CPU
        object.__setattr__(self, "_matrix", full.astype(np.float32))
        # Without extrapolation every new quantile is a convex mix of quantiles that do not
        # decrease over steps, so the cumulative ones still do not.
        object.__setattr__(self, "_extrapolates", bool((full < 0).any()))

    def apply(self, out: FloatArray, *, integer: bool) -> None:
        """In place on a forecast block (n, H, 2Q + 1) float64 [daily | cumulative | mean] of
        unrounded quantiles: recalibrate, clip at 0, round for counts, and keep the
        cumulative invariants (>= the first day's demand, non-decreasing over steps)."""
        q = len(self.levels)
        n, big_h, width = out.shape
        block = out.reshape(n * big_h, width)  # a view: out is C-contiguous
        moved = block.astype(np.float32) @ self._matrix  # type: ignore[attr-defined]
        np.maximum(moved, 0.0, out=moved)
        if integer:
            np.round(moved, out=moved)
        steps = moved.reshape(n, big_h, 2 * q)
        cum = steps[..., q:]
        np.maximum(cum, steps[:, :1, :q], out=cum)  # every step: stays non-decreasing
        if self._extrapolates:  # type: ignore[attr-defined]
            np.maximum.accumulate(cum, axis=1, out=cum)
        block[:, : 2 * q] = moved

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (artifact metadata)."""
        return {"method": "quantile recalibration, closed intervals (counts)",
                "levels": list(self.levels),
                "daily": None if self.daily is None else list(self.daily),
                "cumulative": None if self.cumulative is None else list(self.cumulative),
                "report": dict(self.report)}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> IntervalCalibration | None:
        """Inverse of to_json; None (an artifact from before calibration) gives None."""
        if not data:
            return None

        def levels(key: str) -> tuple[float, ...] | None:
            v = data.get(key)
            return None if v is None else tuple(float(x) for x in v)

        return cls(tuple(float(x) for x in data["levels"]), levels("daily"),
                   levels("cumulative"), dict(data.get("report") or {}))


@dataclass
class _Search:
    """P(y < q(s)) and P(y <= q(s)) on a grid of source levels s."""

    grid: FloatArray
    below: FloatArray  # (G,)
    at_or_below: FloatArray  # (G,)


def _search(q: FloatArray, y: FloatArray, levels: FloatArray, integer: bool) -> _Search:
    lo, hi = _bounds(levels)
    grid = np.unique(np.concatenate([np.arange(lo, hi + GRID_STEP / 2, GRID_STEP), levels]))
    w = interp_weights(levels, grid)  # (Q, G)
    below, at = np.empty(grid.size), np.empty(grid.size)
    for g in range(grid.size):  # a loop over the grid, vectorised over observations
        j = np.flatnonzero(w[:, g])
        v = _post(q[:, j] @ w[j, g], integer)
        below[g] = np.mean(y < v)
        at[g] = np.mean(y <= v)
    return _Search(grid, below, at)


def _choose(search: _Search, levels: FloatArray) -> FloatArray:
    """Source levels: each central pair (tau, 1 - tau) jointly, so that the closed interval
    covers 1 - 2 tau (with a small weight on each tail's own target: discrete coverage moves
    in steps, and a step too far at one end is made up at the other); a level without a
    partner (the median) on its own. Within TOLERANCE of the best, the levels nearest the
    original ones win, so a calibrated model is left as it was."""
    grid, below, at = search.grid, search.below, search.at_or_below
    src = levels.copy()
    done = np.zeros(levels.size, dtype=bool)
    cover = at[None, :] - below[:, None]  # closed coverage of (lo grid, hi grid)
    for k, tau in enumerate(levels):
        partner = np.flatnonzero(np.isclose(levels, 1.0 - tau))
        if tau >= 0.5 or partner.size == 0:
            continue
        m = int(partner[0])
        width = levels[m] - tau
        cost = (np.abs(cover - width) + TAIL_WEIGHT * (np.abs(below - tau)[:, None]
                                                       + np.abs(at - levels[m])[None, :]))
        cost[grid[:, None] > grid[None, :]] = np.inf  # lo <= hi
        ok = cost <= max(float(cost.min()), TOLERANCE)
        moved = np.abs(grid - tau)[:, None] + np.abs(grid - levels[m])[None, :]
        i, j = np.unravel_index(np.argmin(np.where(ok, moved, np.inf)), cost.shape)
        src[k], src[m] = grid[i], grid[j]
        done[[k, m]] = True
    for kk in np.flatnonzero(~done):
        tau = levels[kk]
        err = np.abs((below if tau < 0.5 else at) - tau)
        ok = err <= max(float(err.min()), TOLERANCE)
        src[kk] = grid[ok][np.argmin(np.abs(grid[ok] - tau))]
    out: FloatArray = np.round(np.maximum.accumulate(src), 6).astype(np.float64)
    return out


def _coverage(q: FloatArray, y: FloatArray, levels: FloatArray, source: FloatArray,
              integer: bool) -> dict[str, float]:
    """Closed-interval coverage of the central intervals with the given source levels."""
    v = _post(np.matmul(q, interp_weights(levels, source)), integer)
    out = {}
    for a, b in INTERVALS:
        i, j = int(np.argmin(np.abs(levels - a))), int(np.argmin(np.abs(levels - b)))
        out[f"{round((b - a) * 100)}"] = float(np.mean((v[:, i] <= y) & (y <= v[:, j])))
    return out


def fit_levels(q: FloatArray, y: FloatArray, levels: Sequence[float], *, integer: bool,
               tails_only: bool = False) -> tuple[FloatArray, dict[str, float]]:
    """Source levels for quantiles `q` (m, Q) (real units, unrounded) against actuals `y`
    (m,) (NaN: skipped), and the closed coverage before/after ("80_before", ...).
    `tails_only`: levels in INNER (quartiles, median) keep their own level unless the
    tails' new levels pass them (monotone)."""
    tau = np.asarray(levels, dtype=np.float64)
    keep = np.isfinite(y) & np.isfinite(q).all(axis=1)
    q, y = q[keep], y[keep]
    if y.size == 0:
        return tau.copy(), {}
    source = _choose(_search(q, y, tau, integer), tau)
    if tails_only:
        inner = (tau >= INNER[0]) & (tau <= INNER[1])
        source[inner] = tau[inner]
        source = np.maximum.accumulate(source)
    report = {}
    for name, src in (("before", tau), ("after", source)):
        for key, value in _coverage(q, y, tau, src, integer).items():
            report[f"{key}_{name}"] = value
    return source, report
