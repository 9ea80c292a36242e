"""TSB peer for intermittent demand (statsforecast TSB / Croston-SBA), with quantiles.

Croston's method and its TSB variant (Teunter, Syntetos & Babai, 2011) are the textbook
forecasts for intermittent series (UCI: 44% zero days). statsforecast gives their point
forecast only; the restock math needs quantiles, so this peer reads the forecast as what it
is, a demand probability times a demand size, and builds the distribution from that:

- occurrence: p = exponential smoothing of the "sold that day" indicator (statsforecast
  SimpleExponentialSmoothing with `alpha_p`, TSB's own probability update);
- mean: statsforecast TSB(`alpha_d`, `alpha_p`) (or CrostonSBA with `method="croston"`);
- size: the series' last `size_memory` non-zero days, rescaled so that p x mean size
  equals the mean (a TSB forecast is flat; the sizes' shape, not their level, is kept);
- daily quantiles: the zero-inflated mixture's: 0 up to level 1 - p, then the sizes'
  empirical quantiles;
- cumulative quantiles: of `paths` simulated h-day totals (seeded), so lead-time demand is
  not a sum of daily quantiles. Each path first draws its own probability and size level
  (p from a Beta with the smoother's effective sample size (2 - alpha_p) / alpha_p, the
  level from a bootstrap of the sizes): over 28 days the error of the estimated level,
  which every day shares, is most of the spread (without it a 28-day total's 80% interval
  covered 61% of simulated outcomes, with it 78%; 95%: 93%).

Missing buckets (NaN) are skipped, not read as zero sales. Rows with no sale yet forecast
zero. When every value of a window is an integer the quantiles are rounded (counts), as the
other peers do.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from forecasting._numeric import FloatArray
from forecasting.base import QUANTILE_LEVELS, Forecaster, QuantileForecast

__all__ = ["TSBForecaster"]

METHODS = ("tsb", "croston")


class TSBForecaster(Forecaster):
    """Per-series TSB (or Croston-SBA) mean with a zero-inflated empirical distribution.

    Args:
        alpha_d: smoothing of the demand size (statsforecast TSB's `alpha_d`).
        alpha_p: smoothing of the demand probability (`alpha_p`; also the indicator's SES).
        method: "tsb" (mean from TSB; keeps up with a series that stops selling) or
            "croston" (CrostonSBA, the bias-corrected Croston).
        size_memory: how many of the latest non-zero days give the size distribution.
        max_history: only the last N buckets are smoothed (old history has decayed away).
        paths: simulated paths per series for the cumulative (lead-time) quantiles.
        seed: the simulation's seed (forecasts are repeatable).
    Needs `statsforecast` (the optional `forecast` extra).
    """

    name = "tsb"

    def __init__(self, *, alpha_d: float = 0.1, alpha_p: float = 0.1, method: str = "tsb",
                 size_memory: int = 28, max_history: int | None = 364, paths: int = 1000,
                 seed: int = 0, levels: Sequence[float] = QUANTILE_LEVELS) -> None:
        super().__init__(levels)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        for label, alpha in (("alpha_d", alpha_d), ("alpha_p", alpha_p)):
            if not 0.0 < alpha <= 1.0:
                raise ValueError(f"{label} must be in (0, 1], got {alpha}")
        if size_memory < 1 or paths < 1:
            raise ValueError("size_memory and paths must be >= 1")
        self.alpha_d, self.alpha_p = float(alpha_d), float(alpha_p)
        self.method = method
        self.size_memory = int(size_memory)
        self.max_history = max_history
        self.paths = int(paths)
        self.seed = int(seed)

    def _mean_and_probability(self, y: FloatArray) -> tuple[float, float]:
        """statsforecast's one-step mean and the smoothed sale probability of history `y`."""
        os.environ.setdefault("NIXTLA_ID_AS_COL", "1")
        from statsforecast.models import TSB, CrostonSBA, SimpleExponentialSmoothing

        model: Any = (TSB(alpha_d=self.alpha_d, alpha_p=self.alpha_p) if self.method == "tsb"
                      else CrostonSBA())
        mean = float(model.forecast(y=y, h=1)["mean"][0])
        sold = (y > 0).astype(np.float64)
        prob = float(SimpleExponentialSmoothing(alpha=self.alpha_p).forecast(y=sold, h=1)
                     ["mean"][0])
        return max(mean, 0.0), min(max(prob, 0.0), 1.0)

    def _predict(self, windows: FloatArray, horizon: int,
                 end_days: ArrayLike | None) -> QuantileForecast:
        levels = self._levels
        n = windows.shape[0]
        daily = np.zeros((n, horizon, levels.size))
        cumulative = np.zeros((n, horizon, levels.size))
        mean = np.zeros((n, horizon))
        rng = np.random.default_rng(self.seed)
        for i in range(n):
            row = windows[i]
            y = row[np.isfinite(row)]
            if self.max_history is not None:
                y = y[-self.max_history:]
            sizes = y[y > 0][-self.size_memory:]
            if sizes.size == 0:
                continue  # never sold: zero demand, zero spread
            m, p = self._mean_and_probability(y)
            if m <= 0.0 or p <= 0.0:
                continue
            sizes = sizes * (m / p) / sizes.mean()  # the level TSB says, the shape seen
            mean[i] = m
            daily[i] = _mixture_quantiles(sizes, p, levels)[None, :]
            k = (2.0 - self.alpha_p) / self.alpha_p  # SES's effective sample size
            path_p = rng.beta(p * k + 0.5, (1.0 - p) * k + 0.5, (self.paths, 1))
            boot = sizes[rng.integers(0, sizes.size, (self.paths, sizes.size))]
            path_level = boot.mean(axis=1, keepdims=True) / sizes.mean()
            draws = rng.random((self.paths, horizon)) < path_p
            picked = sizes[rng.integers(0, sizes.size, (self.paths, horizon))] * path_level
            totals = np.cumsum(np.where(draws, picked, 0.0), axis=1)  # (paths, horizon)
            cumulative[i] = np.quantile(totals, levels, axis=0).T
            if np.all(y == np.round(y)):
                daily[i], cumulative[i] = np.round(daily[i]), np.round(cumulative[i])
        cumulative = np.maximum.accumulate(cumulative, axis=1)
        return QuantileForecast(levels, daily, cumulative, mean)

    def __repr__(self) -> str:
        return (f"TSBForecaster(method={self.method!r}, alpha_d={self.alpha_d}, "
                f"alpha_p={self.alpha_p})")


def _mixture_quantiles(sizes: FloatArray, prob: float, levels: FloatArray) -> FloatArray:
    """Quantiles at `levels` of "0 with probability 1 - prob, else a draw from `sizes`"."""
    inside = (levels - (1.0 - prob)) / prob  # the level within the size distribution
    out: FloatArray = np.where(inside > 0.0,
                               np.quantile(sizes, np.clip(inside, 0.0, 1.0)), 0.0)
    return out
