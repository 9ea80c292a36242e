"""Empirical lead-time demand: K-day window sums, the bootstrap distribution and its tail."""

import numpy as np
import pytest

from optimizer.errors import PolicyInputError
from optimizer.lead_time_demand import (
    empirical_cover_demand,
    forecast_error_cover_demand,
    window_sums,
)
from optimizer.simulation import EmpiricalPolicy, MinMaxPolicy, SimulationConfig, simulate


def test_window_sums_match_a_loop_and_skip_windows_with_missing_days():
    rng = np.random.default_rng(0)
    h = rng.poisson(3.0, (4, 30)).astype(float)
    h[1, :5] = np.nan
    sums, complete = window_sums(h, 7)
    assert sums.shape == complete.shape == (4, 24)
    for i in range(4):
        for j in range(24):
            window = h[i, j:j + 7]
            assert complete[i, j] == bool(np.isfinite(window).all())
            if complete[i, j]:
                assert sums[i, j] == window.sum()
    assert not complete[1, :5].any() and complete[1, 5:].all()


def test_without_a_tail_the_distribution_is_the_observed_sums():
    h = np.array([[0.0, 0, 10, 0, 0, 0, 50, 0, 0, 0]])
    dist = empirical_cover_demand(h, 2, tail_weight=0.0)
    observed = np.sort([h[0, j:j + 2].sum() for j in range(9)])
    assert np.allclose(dist.values[0], observed)
    assert dist.mean()[0] == pytest.approx(observed.mean())
    # No stock level above the biggest sum ever helps: its expected shortage is 0 there.
    assert dist.expected_shortage(50.0)[0] == 0.0


def test_the_tail_keeps_stock_above_the_largest_sum_seen_for_high_targets():
    h = np.array([[0.0, 0, 10, 0, 0, 0, 50, 0, 0, 0] * 6])
    body = empirical_cover_demand(h, 3, tail_weight=0.0)
    tailed = empirical_cover_demand(h, 3, tail_weight=0.05, tail_sd_factor=3.0)
    budget = 1e-3 * body.mean()
    assert body.level_for_shortage(budget)[0] <= 60.0
    assert tailed.level_for_shortage(budget)[0] > 60.0
    assert tailed.mean()[0] >= body.mean()[0]  # the normal is clipped at 0: never less


def test_a_sku_without_one_complete_window_gets_no_demand():
    h = np.array([[np.nan] * 10, [1.0] * 10])
    dist = empirical_cover_demand(h, 4)
    assert dist.mean()[0] == 0.0 and dist.mean()[1] == pytest.approx(4.0)


def test_bad_tail_weight_is_refused():
    with pytest.raises(PolicyInputError):
        empirical_cover_demand(np.ones((1, 10)), 2, tail_weight=1.0)


def test_empirical_policy_serves_lumpy_demand_better_than_minmax_at_the_same_target():
    # Small steady orders plus rare big ones: what a 28-day normal sizes badly.
    rng = np.random.default_rng(4)
    steady = rng.poisson(2.0, (40, 300)).astype(float)
    spikes = (rng.random((40, 300)) < 0.03) * rng.integers(20, 60, (40, 300))
    demand = steady + spikes
    days = np.datetime64("2024-01-01") + np.arange(300).astype("timedelta64[D]")
    cfg = SimulationConfig(lead_time_days=5, review_days=1, warmup_days=120, window_days=120,
                           sweep=(0.9, 0.99), service_level=0.95)  # fmt: skip
    res = simulate(demand, days, [EmpiricalPolicy(), MinMaxPolicy()], cfg)
    emp, mm = res.policies["empirical"], res.policies["minmax"]
    assert emp.fill_rate > mm.fill_rate
    fills = [p.fill_rate for p in emp.curve]
    assert fills == sorted(fills)


def test_forecast_errors_recentre_past_errors_on_todays_forecast():
    # Demand doubles halfway: the 4-day sums of the past centre on the old level, the
    # forecast-error model on today's level (mean of the last 4 days x 2 days = 40).
    h = np.array([[5.0] * 40 + [20.0] * 8])
    sums = empirical_cover_demand(h, 2, tail_weight=0.0)
    errs = forecast_error_cover_demand(h, 2, level_window=4, tail_weight=0.0)
    assert sums.mean()[0] < 20.0
    assert errs.quantile(0.5)[0] == pytest.approx(40.0)
    # A constant series has no error at all: the distribution is the forecast itself.
    flat = forecast_error_cover_demand(np.full((1, 60), 3.0), 5, level_window=7, tail_weight=0.0)
    assert np.allclose(flat.values, 15.0)


def test_forecast_errors_policy_runs_in_the_simulation():
    rng = np.random.default_rng(5)
    demand = rng.poisson(6.0, (10, 160)).astype(float)
    days = np.datetime64("2024-01-01") + np.arange(160).astype("timedelta64[D]")
    cfg = SimulationConfig(lead_time_days=3, review_days=1, warmup_days=60, window_days=60,
                           sweep=(0.8, 0.99), service_level=0.95)  # fmt: skip
    res = simulate(demand, days, [EmpiricalPolicy("forecast-errors", level_window=14)], cfg)
    got = res.policies["forecast-errors"]
    assert got.fill_rate > 0.9
    assert [p.avg_inventory for p in got.curve] == sorted(p.avg_inventory for p in got.curve)
