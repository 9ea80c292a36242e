"""The simulation's per-policy diagnostics: what the order-up-to levels did, review by review."""

import numpy as np
import pytest

from optimizer.simulation import (
    ForecastPolicy,
    SimulationConfig,
    cover_reviews,
    simulate,
    smooth_levels,
)
from tests.unit.test_simulation_replay import Exact, dates


class Fixed:
    """Order up to levels[review % len(levels)] (reorder point = level), whatever the demand."""

    def __init__(self, name: str, levels: list[float]) -> None:
        self.name = name
        self.levels_seq = levels
        self.asked: list[float] = []

    def levels(self, history, end_day, targets, config):
        level = self.levels_seq[len(self.asked) % len(self.levels_seq)]
        self.asked.append(level)
        s = np.full((targets.size, history.shape[0]), level)
        return s, s.copy()


def cfg(**kw) -> SimulationConfig:
    base = {"lead_time_days": 0, "review_days": 1, "warmup_days": 7, "window_days": 14,
            "sweep": (0.5,), "service_level": 0.95, "initial_stock_days": 5.0}  # fmt: skip
    return SimulationConfig(**{**base, **kw})


def test_a_steady_level_orders_each_days_demand_and_never_sits_above_it():
    demand = np.full((2, 40), 1.0)
    res = simulate(demand, dates(40), [Fixed("steady", [5.0])], cfg())
    d = res.policies["steady"].diagnostics
    assert d["scored_reviews"] == res.scored_days
    assert d["mean_order_up_to"] == 10.0  # 2 SKUs x 5
    assert d["level_churn"] == 0.0
    assert d["share_above_reorder_point"] == 0.0 and d["mean_excess_position"] == 0.0
    assert d["mean_order_size"] == 1.0
    assert d["mean_quantile_used"] is None  # not a forecast policy


def test_a_level_that_jumps_leaves_stock_above_it_and_orders_less_often():
    demand = np.full((1, 40), 1.0)
    policy = Fixed("jumpy", [9.0, 2.0])
    res = simulate(demand, dates(40), [policy, Fixed("steady", [5.0])], cfg())
    jumpy, steady = res.policies["jumpy"], res.policies["steady"]
    d = jumpy.diagnostics
    scored = policy.asked[-d["scored_reviews"]:]
    assert d["mean_order_up_to"] == pytest.approx(np.mean(scored))
    expected_churn = np.abs(np.diff(scored)).sum() / np.sum(scored)
    assert d["level_churn"] == pytest.approx(expected_churn, abs=1e-5)
    # the day after a high level the position (9 - 1 = 8) is above the low level 2: no order
    assert d["share_above_reorder_point"] > 0.4
    assert d["mean_excess_position"] > 0.0
    assert jumpy.orders < steady.orders
    assert d["mean_order_size"] > steady.diagnostics["mean_order_size"]
    # the ratchet: stock follows the high level, not the mean level (5.5 vs the steady 5)
    assert jumpy.avg_inventory > steady.avg_inventory


def test_forecast_policies_report_the_quantile_their_level_stands_at():
    demand = np.full((3, 40), 10.0)
    res = simulate(demand, dates(40), [ForecastPolicy("exact", Exact(10.0))],
                   cfg(lead_time_days=2, sweep=(0.5, 0.99), target="cycle"))
    q = res.policies["exact"].diagnostics["mean_quantile_used"]
    # an exact forecast is a point mass: its cycle-service level is the demand, CDF 1 there
    assert q == pytest.approx(1.0)


class Spiky(Exact):
    """Exact's forecast, times `factor` on every third day it is asked."""

    name = "spiky"

    def __init__(self, rate: float, factor: float) -> None:
        super().__init__(rate)
        self.factor = factor
        self.calls = 0

    def _predict(self, windows, horizon, end_days):
        f = super()._predict(windows, horizon, end_days)
        self.calls += 1
        k = self.factor if self.calls % 3 == 0 else 1.0
        return type(f)(f.levels, f.daily * k, f.cumulative * k, f.mean * k)


def test_cover_reviews_counts_the_reviews_of_one_protection_interval():
    assert cover_reviews(cfg(lead_time_days=7, review_days=1)) == 8
    assert cover_reviews(cfg(lead_time_days=7, review_days=7)) == 2
    assert cover_reviews(cfg(lead_time_days=6, review_days=4)) == 3
    assert cover_reviews(cfg(lead_time_days=0, review_days=1)) == 1


def test_smooth_levels_is_the_mean_of_the_last_k_levels():
    memory: list = []
    got = [smooth_levels(memory, np.array([[x]]), 3)[0, 0] for x in (3.0, 6.0, 9.0, 0.0)]
    assert got == [3.0, 4.5, 6.0, 5.0]
    assert len(memory) == 3


def test_cover_mean_changes_nothing_for_a_steady_forecast():
    demand = np.full((3, 40), 10.0)
    c = cfg(lead_time_days=3, sweep=(0.5, 0.9))
    plain = simulate(demand, dates(40), [ForecastPolicy("p", Exact(10.0), level_rule="none")],
                     c)
    smooth = simulate(demand, dates(40), [ForecastPolicy("p", Exact(10.0),
                                                         level_rule="cover_mean")], c)
    a, b = plain.policies["p"], smooth.policies["p"]
    assert (a.avg_inventory, a.fill_rate, a.orders) == (b.avg_inventory, b.fill_rate, b.orders)


def test_cover_mean_damps_a_spiky_forecasts_level_and_the_stock_it_leaves():
    rng = np.random.default_rng(0)
    demand = rng.poisson(10.0, size=(20, 60)).astype(float)
    c = cfg(lead_time_days=3, sweep=(0.5, 0.9))
    res = simulate(demand, dates(60), [
        ForecastPolicy("plain", Spiky(10.0, 3.0), level_rule="none"),
        ForecastPolicy("smooth", Spiky(10.0, 3.0)),  # cover_mean: the default
    ], c)
    plain, smooth = res.policies["plain"], res.policies["smooth"]
    assert smooth.diagnostics["level_churn"] < 0.5 * plain.diagnostics["level_churn"]
    assert smooth.diagnostics["mean_excess_position"] < plain.diagnostics["mean_excess_position"]
    assert smooth.avg_inventory < plain.avg_inventory
    assert smooth.orders > plain.orders


def test_cover_mean_is_the_default_level_rule_as_in_the_stream():
    from optimizer.level_rule import DEFAULT_LEVEL_RULE
    from runtime.settings import Settings

    assert ForecastPolicy("p", Exact(1.0)).level_rule == "cover_mean" == DEFAULT_LEVEL_RULE
    assert Settings.model_fields["restock_level_rule"].default == DEFAULT_LEVEL_RULE


def test_level_rule_none_reproduces_the_figures_of_before_the_default_changed():
    # figures of this simulation on main before cover_mean became the default (9850711)
    from forecasting import make_forecaster

    rng = np.random.default_rng(3)
    demand = rng.poisson(rng.uniform(0.5, 12.0, size=(12, 1)), size=(12, 90)).astype(float)
    c = SimulationConfig(lead_time_days=4, review_days=1, warmup_days=28, window_days=28,
                         sweep=(0.8, 0.9, 0.99), service_level=0.95)
    policies = [ForecastPolicy("none", make_forecaster("moving_average"), level_rule="none"),
                ForecastPolicy("default", make_forecaster("moving_average"))]
    res = simulate(demand, dates(90), policies, c)
    old, new = res.policies["none"], res.policies["default"]
    assert (old.avg_inventory, old.fill_rate, old.orders, old.inventory_at_95_fill) == (
        104.86, 0.9725, 612, 82.17)
    assert new.inventory_at_95_fill < old.inventory_at_95_fill  # the default holds less
    assert new.diagnostics["level_churn"] < old.diagnostics["level_churn"]


def test_cli_takes_level_rule_as_a_policy_key(tmp_path):
    import argparse

    from runtime.errors import ConfigError
    from shelfcast import cli_optimizer

    args = argparse.Namespace(policies="forecast:moving_average:level_rule=none,"
                              "forecast:moving_average,"
                              "forecast:moving_average:level_rule=cover_mean",
                              device="cpu", no_progress=True,
                              lstm_model=None, lstm_max_epochs=None)  # fmt: skip
    a, b, c = cli_optimizer._policies(args)
    assert a.level_rule == "none" and b.level_rule == c.level_rule == "cover_mean"
    assert a.forecaster is b.forecaster  # a policy key: one model, asked once a day
    args.policies = "forecast:moving_average:level_rule=max"
    with pytest.raises(ConfigError, match="level_rule must be one of"):
        cli_optimizer._policies(args)


def test_cli_policy_options_read_true_and_false_as_flags():
    """`forecast:lstm:data_holidays=false` turns the flag off: "false" once stayed a string,
    which a model took as true."""
    from shelfcast.cli_optimizer import _kwarg

    assert _kwarg("data_holidays=false", "spec") == ("data_holidays", False)
    assert _kwarg("calibrate=True", "spec") == ("calibrate", True)
    assert _kwarg("warm_start_epochs=4", "spec") == ("warm_start_epochs", 4)
    assert _kwarg("tail=normal", "spec") == ("tail", "normal")
