"""Synthetic daily demand for the drift/retrain tests: a Monday-heavy week that, with `shift`,
becomes x2.5 and peaks on Thursday from a given day on."""

from __future__ import annotations

import numpy as np

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
