"""The policy's exponential tail above a forecast's top quantile: the rules (TAIL_RULES), their
scale b, continuity and monotonicity, and the A/B plumbing of the simulation and its CLI."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer import PolicyInputError
from optimizer.service_level import (
    DEFAULT_TAIL,
    TAIL_RULES,
    DemandDistribution,
    restock_levels,
    tail_scale,
)
from optimizer.simulation import ForecastPolicy, simulate
from runtime.errors import ConfigError
from shelfcast import cli_optimizer
from tests.unit.test_simulation_replay import Trained, _args, _csv, config, dates

LEVELS = np.array([0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975])
rows = st.lists(st.floats(0.0, 500.0), min_size=9, max_size=9).map(sorted)


def _last_gap_atoms(levels, quantiles):
    """The tail as it was before the rules existed (the code of `from_quantiles`, verbatim)."""
    lv = np.asarray(levels, dtype=np.float64)
    qs = np.maximum.accumulate(np.maximum(np.atleast_2d(quantiles), 0.0), axis=1)
    dist = DemandDistribution.from_quantiles(lv, qs, tail="median_chord")  # the same grid
    probs = dist.probs[0]
    edges = np.concatenate([[0.0], np.cumsum(probs)])
    mids = 0.5 * (edges[1:] + edges[:-1])
    above = mids > lv[-1]
    b = (qs[:, -1] - qs[:, -2]) / np.log((1.0 - lv[-2]) / (1.0 - lv[-1]))
    return qs[:, -1:] + b[:, None] * np.log((1.0 - lv[-1]) / (1.0 - mids[above])), above


def _tail_b(dist, levels, quantiles):
    """b recovered from a distribution's tail atoms (Q(u) = q_top + b ln((1-u_top)/(1-u)))."""
    edges = np.concatenate([[0.0], np.cumsum(dist.probs[0])])
    mids = 0.5 * (edges[1:] + edges[:-1])
    above = mids > levels[-1]
    x = np.log((1.0 - levels[-1]) / (1.0 - mids[above]))
    return (dist.values[:, above] - np.asarray(quantiles)[:, -1:]) / x


def test_last_gap_is_the_old_tail_bit_for_bit_and_median_chord_the_default():
    assert DEFAULT_TAIL == "median_chord"
    rng = np.random.default_rng(0)
    qs = np.sort(rng.gamma(0.7, 20.0, (200, LEVELS.size)), axis=1)
    qs[:50, 4] = 0.0  # lumpy rows: a zero median
    qs[:50, :4] = 0.0
    default = DemandDistribution.from_quantiles(LEVELS, qs)
    chord = DemandDistribution.from_quantiles(LEVELS, qs, tail="median_chord")
    np.testing.assert_array_equal(default.values, chord.values)
    named = DemandDistribution.from_quantiles(LEVELS, qs, tail="last_gap")
    want, above = _last_gap_atoms(LEVELS, qs)
    np.testing.assert_array_equal(named.values[:, above], want)


def test_median_chord_gives_the_stated_b():
    qs = np.array([[0, 0, 1, 2, 4, 7, 12, 15, 30.0], [5, 6, 7, 8, 10, 11, 12, 13, 14.0]])
    dist = DemandDistribution.from_quantiles(LEVELS, qs, tail="median_chord")
    want = (qs[:, -1] - qs[:, 4]) / np.log(0.5 / 0.025)
    got = _tail_b(dist, LEVELS, qs)  # every tail atom of the default grid
    np.testing.assert_allclose(got, np.broadcast_to(want[:, None], got.shape), rtol=1e-12)
    np.testing.assert_allclose(tail_scale(LEVELS, qs, "median_chord"), want, rtol=1e-15)
    # differs from the last gap's (here 15 / ln 2 on the first row)
    assert tail_scale(LEVELS, qs, "last_gap")[0] == pytest.approx(15 / np.log(2))
    assert want[0] < tail_scale(LEVELS, qs, "last_gap")[0]


def test_median_chord_interpolates_a_missing_median_and_falls_back_to_the_lowest_level():
    levels = np.array([0.1, 0.4, 0.6, 0.9])
    qs = np.array([[1.0, 4.0, 8.0, 20.0]])
    q50 = 6.0  # halfway between the 0.4 and 0.6 quantiles
    assert tail_scale(levels, qs, "median_chord")[0] == pytest.approx(
        (20.0 - q50) / np.log(0.5 / 0.1))
    upper = np.array([0.6, 0.8, 0.95])  # no level at or below the median: the lowest one
    assert tail_scale(upper, [[3.0, 5.0, 9.0]], "median_chord")[0] == pytest.approx(
        6.0 / np.log(0.4 / 0.05))


def test_upper_fit_is_the_least_squares_slope_over_the_upper_levels():
    rng = np.random.default_rng(1)
    qs = np.sort(rng.gamma(1.0, 10.0, (20, LEVELS.size)), axis=1)
    upper = LEVELS >= 0.5
    want = [np.polyfit(-np.log(1 - LEVELS[upper]), row[upper], 1)[0] for row in qs]
    np.testing.assert_allclose(tail_scale(LEVELS, qs, "upper_fit"), want, rtol=1e-9)


def test_an_exponential_forecast_has_the_same_tail_under_every_rule():
    # Exponential demand (scale 10): every rule reads b = 10 from the exact quantiles.
    qs = -10.0 * np.log(1.0 - LEVELS)[None, :]
    for tail in TAIL_RULES:
        assert tail_scale(LEVELS, qs, tail)[0] == pytest.approx(10.0, rel=1e-9)


@settings(max_examples=80, deadline=None)
@given(row=rows, tail=st.sampled_from(TAIL_RULES))
def test_the_tail_is_monotone_and_continuous_at_the_top_level(row, tail):
    qs = np.array([row])
    assert tail_scale(LEVELS, qs, tail)[0] >= 0.0
    eps = 1e-9  # bins with mids just below, at and just above u_top
    grid = np.concatenate([np.linspace(0, 0.97, 50), 0.975 + eps * np.array([-3, -1, 1, 3]),
                           1 - np.geomspace(0.02, 1e-6, 20), [1.0]])
    dist = DemandDistribution.from_quantiles(LEVELS, qs, grid=grid, tail=tail)
    mids = 0.5 * (grid[1:] + grid[:-1])
    order = np.argsort(dist.values[0], kind="stable")
    # the atoms, in the order of their probability bins, are already sorted: the quantile
    # function (body and tail) is non-decreasing
    np.testing.assert_array_equal(order, np.arange(mids.size))
    # continuous at u_top: the atoms just below and just above meet at q_top
    k = int(np.argmax(mids > 0.975))
    tol = 1e-5 * (1.0 + tail_scale(LEVELS, qs, tail)[0])
    assert abs(dist.values[0, k - 1] - row[-1]) <= tol  # the bin centred on u_top
    assert abs(dist.values[0, k] - row[-1]) <= tol
    assert np.all(dist.values[0, mids > 0.975] >= row[-1])


def test_a_thinner_tail_asks_for_less_stock_at_a_high_fill_rate():
    qs = np.array([[0, 0, 0, 0, 1, 2, 4, 6, 30.0]])  # a wide last gap
    levels = {t: restock_levels(DemandDistribution.from_quantiles(LEVELS, qs, tail=t),
                                service_level=0.99, target="fill_rate",
                                review_demand=1.0)[1][0] for t in TAIL_RULES}  # fmt: skip
    assert levels["median_chord"] < levels["last_gap"]


def test_unknown_tail_rule_is_a_policy_input_error():
    with pytest.raises(PolicyInputError, match="tail"):
        DemandDistribution.from_quantiles(LEVELS, np.ones((1, 9)), tail="bogus")  # type: ignore[arg-type]
    with pytest.raises(PolicyInputError, match="tail"):
        tail_scale(LEVELS, np.ones((1, 9)), "bogus")  # type: ignore[arg-type]


class Spread(Trained):
    """A trained model with a wide top quantile gap; counts its fits and forecasts."""

    def __init__(self) -> None:
        super().__init__(5.0)
        self.predicts = 0

    def _predict(self, windows, horizon, end_days):
        self.predicts += 1
        n = windows.shape[0]
        steps = np.arange(1, horizon + 1, dtype=np.float64)
        shape = np.array([0, 0, 0.2, 0.5, 1.0, 1.5, 2.0, 2.5, 6.0])
        cum = 5.0 * steps[None, :, None] * shape[None, None, :] * np.ones((n, 1, 1))
        daily = 5.0 * np.broadcast_to(shape, (n, horizon, shape.size))
        return type(super()._predict(windows, horizon, end_days))(
            self.levels, daily, cum, np.full((n, horizon), 5.0))


def test_policies_on_one_model_share_its_fits_and_forecasts():
    rng = np.random.default_rng(4)
    demand = rng.poisson(5.0, (4, 100)).astype(float)
    cfg = config(retrain_days=28, sweep=(0.9, 0.99))
    model = Spread()
    both = simulate(demand, dates(100), [ForecastPolicy("a", model),
                                         ForecastPolicy("b", model, tail="last_gap")], cfg)
    alone_model = Spread()
    alone = simulate(demand, dates(100), [ForecastPolicy("a", alone_model)], cfg)
    # one fit and one forecast per day however many policies read the model
    assert model.fitted_through == alone_model.fitted_through and len(model.fitted_through) == 3
    assert model.predicts == alone_model.predicts == 100 - 14
    assert both.policies["b"].retrains[0]["shared"] is True
    a, b = both.policies["a"], both.policies["b"]
    solo = alone.policies["a"]
    assert [p.avg_inventory for p in a.curve] == [p.avg_inventory for p in solo.curve]
    assert a.avg_inventory < b.avg_inventory  # the default chord's tail is the thinner here


def test_cli_tail_is_a_policy_key_and_the_model_is_fitted_once(tmp_path):
    pytest.importorskip("lightgbm")
    out = tmp_path / "out.json"
    args = _args(tmp_path, data=_csv(tmp_path, days=70), json=out, days=10, warmup_days=28,
                 window_days=56, sweep="0.8,0.95",
                 policies="forecast:lightgbm:n_estimators=20,"
                          "forecast:lightgbm:n_estimators=20:tail=median_chord,"
                          "forecast:moving_average:tail=upper_fit,minmax")  # fmt: skip
    args.no_progress = True
    policies = cli_optimizer._policies(args)
    assert [getattr(p, "tail", None) for p in policies] == ["median_chord", "median_chord",
                                                            "upper_fit", None]
    assert policies[0].forecaster is policies[1].forecaster  # type: ignore[attr-defined]
    assert cli_optimizer.run(args) == 0
    doc = json.loads(out.read_text())
    assert doc["tail_default"] == DEFAULT_TAIL
    fitted = doc["fitted"]
    assert fitted["forecast:lightgbm:n_estimators=20:tail=median_chord"]["shared_with"] == \
        "forecast:lightgbm:n_estimators=20"  # fmt: skip
    for name in policies:
        assert name.name in doc["policies"]


@pytest.mark.parametrize("spec", ["forecast:moving_average:tail=bogus",
                                  "forecast:moving_average:tail=1"])
def test_cli_unknown_tail_is_a_config_error(tmp_path, spec):
    args = _args(tmp_path, data=_csv(tmp_path), policies=spec)
    with pytest.raises(ConfigError, match="tail must be one of"):
        cli_optimizer.run(args)


def test_no_registered_model_takes_a_policy_key():
    import inspect

    from forecasting.registry import available_forecasters, forecaster_info

    for name in available_forecasters():
        info = forecaster_info(name)
        assert not set(cli_optimizer.POLICY_KEYS) & set(info.options), name
        try:
            params = inspect.signature(info.build).parameters
        except (TypeError, ValueError):
            continue
        assert not set(cli_optimizer.POLICY_KEYS) & set(params), name
