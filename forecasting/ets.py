"""ETS peer (statsforecast AutoETS, weekly season) behind the Forecaster contract; optional."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from forecasting._numeric import FloatArray
from forecasting.base import QUANTILE_LEVELS, Forecaster, QuantileForecast

__all__ = ["ETSForecaster"]


def _fit_rows(task: tuple[FloatArray, int, int, int | None]) -> tuple[FloatArray, FloatArray]:
    """(mean, sigma) (n, horizon) of AutoETS fitted to each row (module level: picklable)."""
    os.environ.setdefault("NIXTLA_ID_AS_COL", "1")
    from statsforecast.models import AutoETS

    windows, horizon, season_len, max_history = task
    n = windows.shape[0]
    mean = np.zeros((n, horizon))
    sigma = np.zeros((n, horizon))
    interval = 80  # sigma is read off one interval; all of them are normal
    z80 = NormalDist().inv_cdf(0.9)
    for i in range(n):
        row = windows[i]
        finite = np.flatnonzero(np.isfinite(row))
        if finite.size == 0:
            continue
        y = np.nan_to_num(row[finite[0]:], nan=0.0)
        if max_history is not None:
            y = y[-max_history:]
        if y.size < 3:
            mean[i] = y.mean()
            continue
        season = season_len if y.size >= 2 * season_len + 2 else 1
        model: Any = AutoETS(season_length=season)
        try:
            out = model.forecast(y=y, h=horizon, level=[interval])
        except Exception:  # degenerate series (constant, all zero): repeat the mean
            mean[i] = y[-28:].mean()
            continue
        mean[i] = out["mean"]
        sigma[i] = np.maximum(out[f"hi-{interval}"] - out["mean"], 0.0) / z80
    return mean, sigma


class ETSForecaster(Forecaster):
    """Per-series AutoETS (statsforecast; model chosen by AICc, season `season`).

    - daily quantiles: the model's own prediction intervals (normal errors), clipped at 0;
    - mean: the point forecast clipped at 0;
    - cumulative: Normal(sum of means, sum of per-step variances) clipped at 0. ETS step
      errors are positively correlated, so this is narrower than the truth; the backtest
      scores daily quantiles only.

    Each row's history starts at its first finite bucket; missing buckets inside it are
    filled with 0 (ETS needs a regular series). Rows with fewer than two seasons of history
    fall back to a simple exponential smoothing without season. Only the last
    `max_history` buckets are fitted (two years by default: a weekly-season ETS gains
    nothing from more, and fitting cost grows with length). `n_jobs` > 1 fits row chunks
    in forked worker processes (same numbers, less wall time). A local model: each
    `predict` fits every window afresh (on its history only), so `fit(panel)` keeps
    nothing. Needs `statsforecast` (the optional `forecast` extra).
    """

    name = "ets"

    def __init__(self, season: int = 7, *, max_history: int | None = 728, n_jobs: int = 1,
                 levels: Sequence[float] = QUANTILE_LEVELS) -> None:
        super().__init__(levels)
        self.season = int(season)
        self.max_history = max_history
        self.n_jobs = int(n_jobs)

    def _predict(self, windows: FloatArray, horizon: int,
                 end_days: ArrayLike | None) -> QuantileForecast:
        levels = self._levels
        n = windows.shape[0]
        z = np.array([NormalDist().inv_cdf(float(q)) for q in levels])
        jobs = max(1, min(self.n_jobs, n))
        if jobs == 1:
            mean, sigma = _fit_rows((windows, horizon, self.season, self.max_history))
        else:  # series are independent: fork workers over row chunks
            chunks = np.array_split(np.arange(n), jobs)
            tasks = [(windows[c], horizon, self.season, self.max_history) for c in chunks]
            with multiprocessing.get_context("fork").Pool(jobs) as pool:
                parts = pool.map(_fit_rows, tasks)
            mean = np.concatenate([m for m, _ in parts])
            sigma = np.concatenate([s for _, s in parts])
        mean = np.nan_to_num(mean)
        sigma = np.nan_to_num(sigma)
        daily = np.maximum(mean[..., None] + sigma[..., None] * z, 0.0)
        cum_mean = np.cumsum(mean, axis=1)
        cum_sd = np.sqrt(np.cumsum(sigma**2, axis=1))
        cumulative = np.maximum(cum_mean[..., None] + cum_sd[..., None] * z, 0.0)
        cumulative = np.maximum.accumulate(cumulative, axis=1)
        return QuantileForecast(levels, daily, cumulative, np.maximum(mean, 0.0))

    def __repr__(self) -> str:
        return f"ETSForecaster(season={self.season}, max_history={self.max_history})"
