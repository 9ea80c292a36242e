"""Closed-loop simulation: lead times, lost sales vs backorders, no peeking, scores, CLI errors."""

import argparse
import json

import numpy as np
import pytest

from forecasting import make_forecaster
from forecasting.base import Forecaster, QuantileForecast
from optimizer.simulation import (
    ForecastPolicy,
    MinMaxPolicy,
    SimulationConfig,
    SimulationError,
    interpolate_inventory_at_fill,
    simulate,
)
from runtime.errors import ConfigError
from shelfcast import cli_optimizer


def dates(n: int) -> np.ndarray:
    return np.datetime64("2024-01-01") + np.arange(n).astype("timedelta64[D]")


class Exact(Forecaster):
    """Knows the constant demand rate exactly; records the last history value it saw."""

    name = "exact"

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate
        self.seen_lengths: list[int] = []

    def _predict(self, windows, horizon, end_days):
        self.seen_lengths.append(int(np.isfinite(windows).sum(axis=1).max()))
        n = windows.shape[0]
        steps = np.arange(1, horizon + 1)
        cum = np.broadcast_to((self.rate * steps)[None, :, None], (n, horizon, self.levels.size))
        daily = np.full((n, horizon, self.levels.size), self.rate)
        return QuantileForecast(self.levels, daily, cum, np.full((n, horizon), self.rate))


def config(**kw) -> SimulationConfig:
    base = {"lead_time_days": 3, "review_days": 1, "warmup_days": 14, "window_days": 28,
            "sweep": (0.5, 0.9), "service_level": 0.95}  # fmt: skip
    return SimulationConfig(**{**base, **kw})


def test_constant_demand_with_an_exact_forecast_never_stocks_out():
    demand = np.full((3, 60), 10.0)
    res = simulate(demand, dates(60), [ForecastPolicy("exact", Exact(10.0))], config())
    got = res.policies["exact"]
    assert got.fill_rate == 1.0 and got.stockout_days == 0
    # Order-up-to S = 4 days (L + R) of 10/day, reviewed daily: 10 units ordered every day,
    # and what is left at the end of a day is exactly the day's receipt used up: 0 .. 10.
    assert got.orders == 3 * res.scored_days
    assert 0.0 <= got.avg_inventory_per_sku <= 10.0
    assert res.scored_days == 60 - 14 - 4


def test_orders_arrive_after_the_lead_time():
    # Start empty: with lead time 3 the first order (end of day 0) is on the shelf for day 4,
    # so days 1..3 (and day 0) lose everything.
    demand = np.full((1, 40), 5.0)
    cfg = config(initial_stock_days=0.0, warmup_days=20, lead_time_days=3)
    res = simulate(demand, dates(40), [ForecastPolicy("exact", Exact(5.0))], cfg)
    assert res.policies["exact"].fill_rate == 1.0  # burn-in (L + R days) is not scored
    cfg = config(initial_stock_days=0.0, warmup_days=20, lead_time_days=3, sweep=(0.9,))
    res = simulate(demand, dates(40), [ForecastPolicy("exact", Exact(5.0))], cfg)
    assert res.policies["exact"].stockout_days == 0


def test_lost_sales_and_backorders_differ_only_in_what_happens_to_the_shortfall():
    rng = np.random.default_rng(0)
    demand = rng.poisson(8.0, (20, 120)).astype(float)
    lost = simulate(demand, dates(120), [MinMaxPolicy()], config())
    back = simulate(demand, dates(120), [MinMaxPolicy()], config(backorders=True))
    assert 0.5 < lost.policies["minmax"].fill_rate < 1.0
    assert 0.5 < back.policies["minmax"].fill_rate < 1.0
    assert back.policies["minmax"].units_ordered > lost.policies["minmax"].units_ordered


def test_forecaster_sees_only_history_up_to_the_day_just_closed():
    demand = np.arange(1.0, 51.0)[None, :]  # demand on day t is t + 1
    seen: list[float] = []

    class Spy(Exact):
        def _predict(self, windows, horizon, end_days):
            seen.append(float(windows[0, -1]))
            return super()._predict(windows, horizon, end_days)

    simulate(demand, dates(50), [ForecastPolicy("spy", Spy(1.0))], config())
    # Reviews at the end of days 14..49 see the demand of days 14..49 as their last value.
    assert seen == [float(t + 1) for t in range(14, 50)]


def test_higher_service_targets_hold_more_stock_and_serve_more():
    rng = np.random.default_rng(1)
    demand = rng.poisson(rng.uniform(1, 30, (30, 1)), (30, 200)).astype(float)
    cfg = config(sweep=(0.6, 0.8, 0.9, 0.99), window_days=56, warmup_days=56)
    res = simulate(demand, dates(200), [
        ForecastPolicy("forecast:moving_average", make_forecaster("moving_average")),
        MinMaxPolicy()], cfg)  # fmt: skip
    for result in res.policies.values():
        fills = [p.fill_rate for p in result.curve]
        stock = [p.avg_inventory for p in result.curve]
        assert fills == sorted(fills) and stock == sorted(stock)
    doc = res.as_json()
    assert set(doc["policies"]["minmax"]) >= {"fill_rate", "avg_inventory", "stockout_days",
                                              "orders", "inventory_at_95_fill"}  # fmt: skip
    json.dumps(doc)


def test_inventory_at_fill_interpolates_and_says_when_out_of_reach():
    assert interpolate_inventory_at_fill([0.9, 0.94, 0.96], [100, 140, 180]) == pytest.approx(160)
    assert interpolate_inventory_at_fill([0.8, 0.9], [1, 2]) is None
    assert interpolate_inventory_at_fill([0.96, 0.99], [50, 90]) == 50


def test_bad_inputs_are_simulation_errors():
    with pytest.raises(SimulationError):
        simulate(np.ones((2, 10)), dates(10), [MinMaxPolicy()], config())  # too short
    with pytest.raises(SimulationError):
        simulate(-np.ones((2, 60)), dates(60), [MinMaxPolicy()], config())
    with pytest.raises(SimulationError):
        simulate(np.ones((2, 60)), dates(60), [MinMaxPolicy(), MinMaxPolicy()], config())


def _args(tmp_path, **kw) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    cli_optimizer.add_commands(sub)
    argv = ["simulate", "--data", str(kw.pop("data", tmp_path / "d.csv"))]
    for key, value in kw.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return parser.parse_args(argv)


def _csv(tmp_path, days=80):
    rng = np.random.default_rng(3)
    lines = ["unique_id,ds,y"]
    for sku in ("a", "b", "c"):
        for d in dates(days):
            lines.append(f"{sku},{d},{rng.poisson(6)}")
    path = tmp_path / "d.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_simulate_writes_the_issue_json_shape(tmp_path):
    data = _csv(tmp_path)
    out = tmp_path / "out.json"
    args = _args(tmp_path, data=data, json=out, warmup_days=28, window_days=56,
                 policies="forecast:moving_average,forecast:moving_average:level_rule=none,"
                          "minmax", sweep="0.8,0.95,0.99")  # fmt: skip
    args.no_progress = True
    assert cli_optimizer.run(args) == 0
    doc = json.loads(out.read_text())
    for name in ("forecast:moving_average", "minmax"):
        assert {"fill_rate", "avg_inventory", "stockout_days", "orders",
                "inventory_at_95_fill"} <= set(doc["policies"][name])  # fmt: skip
    assert doc["machine"]["cpus"] >= 1
    # the level rule each forecast policy ran, for a replay (benchmarks/simpolicy_replay.py)
    assert doc["level_rule_default"] == "cover_mean"
    assert doc["policies"]["forecast:moving_average"]["level_rule"] == "cover_mean"
    assert doc["policies"]["forecast:moving_average:level_rule=none"]["level_rule"] == "none"
    assert "level_rule" not in doc["policies"]["minmax"]


@pytest.mark.parametrize(("kw", "message"), [
    ({"policies": "forecast:lstm:hiden=3", "warmup_days": 30}, "unexpected keyword"),
    ({"policies": "empirical:tail_weight=1.5"}, "tail_weight must be in"),
    ({"policies": "empirical:bogus=1"}, "unknown option 'bogus'"),
    ({"policies": "bogus"}, "unknown policy"),
    ({"policies": "forecast:nope"}, "no forecaster 'nope'"),
    ({"policies": "minmax,minmax"}, "twice"),
    ({"service_level": 1.5}, "(0, 1)"),
    ({"sweep": "0.5,x"}, "comma-separated"),
])  # fmt: skip
def test_cli_mistakes_are_one_line_config_errors(tmp_path, kw, message):
    args = _args(tmp_path, data=_csv(tmp_path), **kw)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cli_optimizer.run(args)


def test_cli_run_returns_none_for_other_commands():
    assert cli_optimizer.run(argparse.Namespace(command="worker")) is None
    assert cli_optimizer.run(argparse.Namespace(command="bench", bench_command="inference")) \
        is None  # fmt: skip


def test_an_order_cost_means_fewer_larger_orders_and_costs_in_the_result():
    rng = np.random.default_rng(2)
    demand = rng.poisson(10.0, (10, 150)).astype(float)
    free = simulate(demand, dates(150), [MinMaxPolicy()], config())
    costly = simulate(demand, dates(150), [MinMaxPolicy()], config(order_cost=50.0,
                                                                   unit_cost=2.0))
    a, b = free.policies["minmax"], costly.policies["minmax"]
    assert a.costs is None
    assert b.orders < a.orders / 2 and b.avg_inventory > a.avg_inventory
    assert b.costs is not None
    assert b.costs["ordering"] == b.orders * 50.0
    assert b.costs["total"] == pytest.approx(b.costs["ordering"] + b.costs["holding"])
    with pytest.raises(SimulationError, match="order_cost"):
        config(order_cost=-1.0).validate()


def test_cli_simulate_fits_global_models_on_the_days_before_the_simulation(tmp_path):
    """Every registered model is a forecast:NAME policy: LightGBM is fitted (through
    `fit(panel)`) on the history before the first simulated day only; ETS, a local model,
    fits each window when it forecasts and so is not fitted ahead."""
    pytest.importorskip("lightgbm")
    pytest.importorskip("statsforecast")
    data = _csv(tmp_path, days=70)
    out = tmp_path / "out.json"
    args = _args(tmp_path, data=data, json=out, days=10, warmup_days=28, window_days=56,
                 sweep="0.8,0.95",
                 policies="forecast:ets,forecast:lightgbm:n_estimators=20,"
                          "forecast:moving_average,minmax")  # fmt: skip
    args.no_progress = True
    assert cli_optimizer.run(args) == 0
    doc = json.loads(out.read_text())
    for name in ("forecast:ets", "forecast:lightgbm:n_estimators=20",
                 "forecast:moving_average", "minmax"):
        assert 0.0 <= doc["policies"][name]["fill_rate"] <= 1.0
    first_simulated = dates(70)[60]
    fitted = doc["fitted"]
    assert set(fitted) == {"forecast:lightgbm:n_estimators=20"}
    info = fitted["forecast:lightgbm:n_estimators=20"]
    assert info["trained_through"] == str(first_simulated - np.timedelta64(1, "D"))
    assert info["overlaps_simulation"] is False and info["metrics"]["rows"] > 0


class Trained(Exact):
    """A model that is trained: records the last day of every panel it is fitted on."""

    fits = True

    def __init__(self, rate: float) -> None:
        super().__init__(rate)
        self.fitted_through: list[float] = []

    def fit(self, panel):
        self.fitted_through.append(float(panel.values[0, -1]))
        return self


def test_trained_models_are_retrained_on_the_history_so_far_every_n_days():
    demand = np.arange(1.0, 101.0)[None, :]  # demand on day t is t + 1
    model, local = Trained(1.0), Exact(1.0)
    result = simulate(demand, dates(100), [ForecastPolicy("trained", model),
                                           ForecastPolicy("local", local)],
                      config(retrain_days=28, review_days=3))
    # Simulated days 14..99; reviews every 3 days; a retrain on the first review at least
    # 28 days after the last fit: steps 30 and 60 (days 44 and 74), never later data.
    assert model.fitted_through == [45.0, 75.0]
    retrains = result.policies["trained"].retrains
    assert [r["after_day"] for r in retrains] == [str(dates(100)[44]), str(dates(100)[74])]
    assert retrains[0]["trained_on"] == f"{dates(100)[0]} .. {dates(100)[44]}"
    assert retrains[1]["n_days"] == 75
    assert result.policies["local"].retrains == []  # nothing to train
    never = Trained(1.0)
    simulate(demand, dates(100), [ForecastPolicy("never", never)], config(retrain_days=0))
    assert never.fitted_through == []
    with pytest.raises(SimulationError, match="retrain_days"):
        config(retrain_days=-1).validate()


def test_cli_default_protocol_simulates_what_the_data_allows_and_retrains(tmp_path):
    """No --days: the last 365 days or all after the warm-up; forecast:served is the
    model a worker serves by default; LightGBM is refitted every --retrain-days."""
    pytest.importorskip("lightgbm")
    from runtime.settings import Settings

    data = _csv(tmp_path, days=110)
    out = tmp_path / "out.json"
    # served is the LSTM: the warm-up is long enough to train it (a tiny one: 1 epoch)
    args = _args(tmp_path, data=data, json=out, warmup_days=60, window_days=56,
                 sweep="0.8,0.95", retrain_days=20, lstm_max_epochs=1,
                 policies="forecast:served,forecast:lightgbm:n_estimators=10,minmax")
    args.no_progress = True
    assert cli_optimizer.run(args) == 0
    doc = json.loads(out.read_text())
    assert doc["simulated_days"] == 50 and doc["config"]["days"] == 50
    assert doc["served"] == Settings.model_fields["model"].default
    assert "forecast:served" in doc["policies"]
    retrains = doc["policies"]["forecast:lightgbm:n_estimators=10"]["retrains"]
    first = dates(110)[60]
    assert [r["after_day"] for r in retrains] == [str(first + np.timedelta64(k, "D"))
                                                  for k in (20, 40)]
    assert doc["config"]["retrain_days"] == 20


class Promoted(Trained):
    """A trained model that reads covariates: records the panels' and the forecasts'."""

    uses_covariates = True

    def __init__(self, rate: float) -> None:
        super().__init__(rate)
        self.fit_covariates: list[object] = []
        self.predict_covariates: list[object] = []

    def fit(self, panel):
        self.fit_covariates.append(panel.covariates)
        return super().fit(panel)

    def _predict_known(self, windows, horizon, end_days, covariates):
        self.predict_covariates.append(covariates)
        return self._predict(windows, horizon, end_days)


def test_planned_promotions_reach_the_retrains_and_forecasts_of_forecast_policies():
    from forecasting.covariates import Covariates

    demand = np.full((2, 100), 3.0)
    promo = np.zeros((2, 120))
    promo[1, 50:60] = 1.0
    cov = Covariates(dates(100)[0], promo, np.ones_like(promo))
    model = Promoted(3.0)
    simulate(demand, dates(100), [ForecastPolicy("p", model)], config(retrain_days=28),
             covariates=cov)
    assert model.fit_covariates and all(c is cov for c in model.fit_covariates)
    assert model.predict_covariates and all(c is cov for c in model.predict_covariates)
    plain = Promoted(3.0)
    simulate(demand, dates(100), [ForecastPolicy("p", plain)], config(retrain_days=28))
    assert plain.fit_covariates == [None, None, None] and plain.predict_covariates == []
