"""The simulation's per-policy diagnostics: what the order-up-to levels did, review by review."""

import numpy as np
import pytest

from optimizer.simulation import ForecastPolicy, SimulationConfig, simulate
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
