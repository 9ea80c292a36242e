"""The TSB peer: statsforecast's mean, a zero-inflated distribution around it, the registry."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("statsforecast")

from forecasting.intermittent import TSBForecaster, _mixture_quantiles
from forecasting.registry import make_forecaster


def _intermittent(n: int, days: int, prob: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sold = rng.random((n, days)) < prob
    return np.where(sold, rng.poisson(4.0, (n, days)) + 1.0, 0.0)


def test_mean_is_statsforecast_tsb() -> None:
    from statsforecast.models import TSB

    y = _intermittent(1, 200, 0.3)[0]
    fc = TSBForecaster().predict(y[None, :], 7)
    expected = TSB(alpha_d=0.1, alpha_p=0.1).forecast(y=y, h=1)["mean"][0]
    assert fc.mean[0] == pytest.approx(np.full(7, expected))


def test_zero_inflated_quantiles_cover_at_nominal_rate() -> None:
    windows = _intermittent(300, 400, 0.3, seed=1)
    history, future = windows[:, :372], windows[:, 372:]
    fc = TSBForecaster().predict(history, 28)
    levels = fc.levels
    lo, hi = np.flatnonzero(np.isclose(levels, 0.1))[0], np.flatnonzero(np.isclose(levels, 0.9))[0]
    # 70% of days are zero: q0.1 (and the median) sit at 0, the upper tail does not.
    assert np.all(fc.daily[:, :, lo] == 0.0)
    assert np.mean(fc.daily[:, :, hi] > 0) > 0.9
    covered = (future >= fc.daily[:, :, lo]) & (future <= fc.daily[:, :, hi])
    assert 0.8 <= covered.mean() <= 0.97  # closed interval, ties at 0 count as inside
    # Lead-time totals: the simulated 28-day total's 80% interval covers about 80%.
    total = future.sum(axis=1)
    inside = (total >= fc.cumulative[:, -1, lo]) & (total <= fc.cumulative[:, -1, hi])
    assert 0.7 <= inside.mean() <= 0.92


def test_mixture_quantiles_put_mass_at_zero() -> None:
    sizes = np.array([1.0, 2.0, 3.0, 4.0])
    q = _mixture_quantiles(sizes, 0.5, np.array([0.25, 0.5, 0.75, 1.0 - 1e-9]))
    assert q[0] == 0.0 and q[1] == 0.0
    assert q[2] == pytest.approx(np.quantile(sizes, 0.5))
    assert q[3] == pytest.approx(4.0)


def test_missing_days_are_skipped_and_empty_rows_forecast_zero() -> None:
    y = _intermittent(1, 120, 0.4, seed=2)[0]
    gappy = y.copy()
    gappy[30:60] = np.nan
    windows = np.stack([gappy, np.full(120, np.nan), np.zeros(120)])
    fc = TSBForecaster().predict(windows, 5)
    skipped = TSBForecaster().predict(np.concatenate([y[:30], y[60:]])[None, :], 5)
    assert fc.mean[0] == pytest.approx(skipped.mean[0])
    assert np.all(fc.mean[1:] == 0) and np.all(fc.daily[1:] == 0)
    assert np.all(fc.cumulative[1:] == 0)


def test_integer_history_gives_integer_quantiles_and_repeatable_draws() -> None:
    windows = _intermittent(5, 100, 0.5, seed=3)
    a = TSBForecaster().predict(windows, 14)
    b = TSBForecaster().predict(windows, 14)
    assert np.array_equal(a.cumulative, b.cumulative)
    assert np.all(a.daily == np.round(a.daily))
    assert np.all(np.diff(a.cumulative, axis=1) >= 0)


def test_registered_and_croston_variant() -> None:
    model = make_forecaster("tsb", method="croston")
    assert isinstance(model, TSBForecaster) and model.method == "croston"
    with pytest.raises(ValueError, match="method"):
        TSBForecaster(method="holt")
    with pytest.raises(ValueError, match="alpha_p"):
        TSBForecaster(alpha_p=0.0)
