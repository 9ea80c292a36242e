"""Synthetic daily demand for the drift/retrain tests: a Monday-heavy week that, with `shift`,
becomes x2.5 and peaks on Thursday from a given day on."""

from __future__ import annotations

import numpy as np

from forecasting.data import Panel

PROFILE = np.array([2.0, 1.2, 0.6, 0.5, 0.7, 1.0, 1.0])  # Monday-heavy week (day 0 a Monday)


def shifted_demand(n_skus: int, days: int, shift_day: int, shift: bool) -> np.ndarray:
    """(n_skus, days) Poisson daily units, seeded; with `shift`, from `shift_day` on x2.5 and
    peaking Thursday. The same seed gives the same levels and draws with and without shift."""
    rng = np.random.default_rng(7)
    levels = rng.uniform(4, 12, n_skus)
    t = np.arange(days)
    after = shift & (t >= shift_day)
    weekday = np.where(after, np.roll(PROFILE, 3)[t % 7], PROFILE[t % 7])
    lam = levels[:, None] * weekday[None, :] * np.where(after, 2.5, 1.0)[None, :]
    return rng.poisson(lam).astype(float)


WEEK = np.array([2.0, 4.0, 0.0, 1.0, 8.0, 12.0, 3.0])  # a strong weekly pattern, Monday first
START = np.datetime64("2012-01-02")  # a Monday


def weekly_panel(n: int, days: int, seed: int = 0) -> Panel:
    """(n, days) seeded Poisson demand with `WEEK`'s pattern around a per-series level from
    `START`; the first three series start on day 100 (NaN before: late starters)."""
    rng = np.random.default_rng(seed)
    level = rng.gamma(2.0, 3.0, (n, 1))
    values = rng.poisson(level * np.tile(WEEK, days // 7 + 1)[None, :days] / WEEK.mean())
    values = values.astype(np.float64)
    values[:3, :100] = np.nan
    return Panel(tuple(str(i) for i in range(n)), START, values)
