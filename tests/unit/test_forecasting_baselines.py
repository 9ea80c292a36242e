"""SeasonalNaive and MovingAverage: exact cases, short history, calibration, vectorisation."""

from __future__ import annotations

import numpy as np
import pytest

from forecasting import Forecaster, MovingAverage, SeasonalNaive, coverage

WEEK = np.array([3.0, 5.0, 0.0, 2.0, 8.0, 13.0, 1.0])


def _lumpy(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Zero-inflated negative-binomial-like demand, the shape of slow e-commerce SKUs."""
    rate = rng.gamma(0.5, 6.0, shape)
    return (rng.poisson(rate) * (rng.random(shape) < 0.3)).astype(float)


def test_seasonal_naive_reproduces_a_weekly_series_with_zero_spread() -> None:
    window = np.tile(WEEK, 8)[3:]  # does not start on a season boundary
    fc = SeasonalNaive().forecast_one(window, 10)
    expected = np.tile(WEEK, 3)[3 + len(window) % 7 :][:10]
    np.testing.assert_array_equal(fc.mean[0], expected)
    for q in range(fc.levels.size):
        np.testing.assert_array_equal(fc.daily[0, :, q], expected)
        np.testing.assert_array_equal(fc.cumulative[0, :, q], np.cumsum(expected))
    assert fc.lead_time_quantile(0, 7, 0.95) == WEEK.sum()


def test_seasonal_naive_spread_comes_from_seasonal_differences() -> None:
    # Only the first day of each week alternates 0/1 extra: week-over-week differences are
    # three +1, two -1 and thirty 0s, pooled over all days -> the outer quantiles are +-1.
    window = np.tile(WEEK + 5.0, 6)
    window[::7] += [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    fc = SeasonalNaive().forecast_one(window, 7)
    np.testing.assert_allclose(fc.daily[0, :, -1] - fc.mean[0], 1.0)
    np.testing.assert_allclose(fc.mean[0] - fc.daily[0, :, 0], 1.0)
    np.testing.assert_allclose(fc.daily[0, :, 4], fc.mean[0])  # median residual is 0


def test_seasonal_naive_falls_back_to_moving_average_on_short_history() -> None:
    short = np.array([np.nan] * 20 + [4.0, 6.0, 5.0, 5.0, 4.0, 6.0, 5.0, 5.0])  # 8 < 2 seasons
    sn = SeasonalNaive(fallback_window=28).forecast_one(short, 5)
    ma = MovingAverage(28).forecast_one(short, 5)
    np.testing.assert_array_equal(sn.daily, ma.daily)
    np.testing.assert_array_equal(sn.cumulative, ma.cumulative)
    np.testing.assert_allclose(sn.mean, 5.0)


def test_seasonal_naive_fills_a_missing_bucket_in_the_last_season() -> None:
    window = np.tile(WEEK, 4)
    window[-3] = np.nan
    fc = SeasonalNaive().forecast_one(window, 7)
    recent = window[np.isfinite(window)][-28:].mean()
    assert fc.mean[0, 4] == pytest.approx(recent)
    assert np.all(np.isfinite(fc.cumulative))


def test_moving_average_on_a_constant_series() -> None:
    fc = MovingAverage(window=14).forecast_one(np.full(30, 4.0), 20)
    np.testing.assert_array_equal(fc.mean, 4.0)
    np.testing.assert_array_equal(fc.daily, 4.0)
    for q in range(fc.levels.size):
        np.testing.assert_allclose(fc.cumulative[0, :, q], 4.0 * np.arange(1, 21))
    assert fc.lead_time_quantile(0, 30, 0.975) == pytest.approx(120.0)


def test_moving_average_uses_the_last_k_observations_and_skips_gaps() -> None:
    window = np.array([np.nan, np.nan, 100.0, 1.0, np.nan, 2.0, 3.0])
    fc = MovingAverage(window=3).forecast_one(window, 2)
    np.testing.assert_allclose(fc.mean, 2.0)
    np.testing.assert_allclose(fc.daily[0, 0, [0, 4, 8]], [1.05, 2.0, 2.95])


def test_one_observation_gives_it_back_with_zero_spread() -> None:
    for model in (SeasonalNaive(), MovingAverage()):
        fc = model.forecast_one(np.array([np.nan] * 9 + [6.0]), 3)
        np.testing.assert_array_equal(fc.daily, 6.0)
        np.testing.assert_array_equal(fc.cumulative[0, :, 4], [6.0, 12.0, 18.0])


@pytest.mark.parametrize("model", [SeasonalNaive(), MovingAverage(), MovingAverage(7)])
def test_quantiles_are_monotone_and_non_negative_on_lumpy_demand(model: Forecaster) -> None:
    rng = np.random.default_rng(42)
    windows = _lumpy(rng, (500, 63))
    windows[:50, :40] = np.nan  # new SKUs
    windows[50:100][rng.random((50, 63)) < 0.2] = np.nan  # gaps
    fc = model.predict(windows, 21)  # QuantileForecast validates monotone and >= 0 itself
    assert np.all(np.diff(fc.daily, axis=2) >= 0) and np.all(fc.daily >= 0)
    assert np.all(np.diff(fc.cumulative, axis=2) >= 0) and np.all(fc.cumulative >= 0)
    assert np.all(np.diff(fc.cumulative, axis=1) >= 0)  # total demand never shrinks with h


@pytest.mark.parametrize("model", [SeasonalNaive(), MovingAverage(), MovingAverage(56)])
def test_eighty_percent_intervals_cover_iid_poisson_near_nominal(model: Forecaster) -> None:
    rng = np.random.default_rng(1)
    demand = rng.poisson(20.0, size=(4000, 70)).astype(float)
    history, future = demand[:, :56], demand[:, 56:]
    fc = model.predict(history, 14)
    lo, hi = list(fc.levels).index(0.1), list(fc.levels).index(0.9)
    daily = coverage(future, fc.daily[:, :, lo], fc.daily[:, :, hi])
    assert daily == pytest.approx(0.8, abs=0.05)
    totals = future.cumsum(axis=1)
    for h in (1, 7, 14):
        cov = coverage(totals[:, h - 1], fc.cumulative[:, h - 1, lo], fc.cumulative[:, h - 1, hi])
        assert cov == pytest.approx(0.8, abs=0.06), h


@pytest.mark.parametrize("model", [SeasonalNaive(), MovingAverage()])
def test_batch_equals_one_by_one(model: Forecaster) -> None:
    rng = np.random.default_rng(3)
    windows = _lumpy(rng, (12, 35))
    windows[0] = np.nan
    windows[1, :30] = np.nan  # falls back in SeasonalNaive
    windows[2, [5, 33]] = np.nan
    batch = model.predict(windows, 10)
    for i, row in enumerate(windows):
        one = model.forecast_one(row, 10)
        np.testing.assert_allclose(one.daily[0], batch.daily[i])
        np.testing.assert_allclose(one.cumulative[0], batch.cumulative[i])
        np.testing.assert_allclose(one.mean[0], batch.mean[i])


def test_thousands_of_series_in_one_call() -> None:
    rng = np.random.default_rng(5)
    fc = SeasonalNaive().predict(_lumpy(rng, (5000, 90)), 28)
    assert fc.cumulative.shape == (5000, 28, 9)
