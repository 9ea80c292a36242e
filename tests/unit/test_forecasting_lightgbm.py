"""The LightGBM global peer: lag features are causal, it learns a weekly pattern, its quantiles
are a valid forecast, and the backtest can run it by name."""

from __future__ import annotations

import numpy as np
import pytest

from forecasting.backtest import rolling_origin
from forecasting.base import QuantileForecast
from forecasting.data import Panel
from forecasting.lag_features import FEATURE_NAMES, LagTable, lag_features
from forecasting.registry import make_forecaster

pytest.importorskip("lightgbm")

from forecasting.lightgbm_peer import LightGBMForecaster, NotFittedError
from tests.support.demand import weekly_panel


def _panel(n: int = 30, days: int = 280, seed: int = 0) -> Panel:
    return weekly_panel(n, days, seed)


def _small(**kw: object) -> LightGBMForecaster:
    return LightGBMForecaster(14, n_estimators=60, num_leaves=15, min_child_samples=20, **kw)


def test_lag_features_only_look_at_the_past() -> None:
    panel = _panel(n=4, days=120)
    table = LagTable.of(panel.values)
    rows = np.repeat(np.arange(4), 14)
    origins = np.full(rows.size, 90)
    steps = np.tile(np.arange(1, 15), 4)
    kinds = np.zeros(rows.size, dtype=np.intp)
    dates = panel.dates
    dates = np.concatenate([dates, dates[-1] + np.arange(1, 15).astype("timedelta64[D]")])
    x, scale = lag_features(table, rows, origins, steps, kinds, dates)
    assert x.shape == (rows.size, len(FEATURE_NAMES))
    future = panel.values.copy()
    future[:, 91:] = 1e6  # anything after the origin must not move a feature
    x2, scale2 = lag_features(LagTable.of(future), rows, origins, steps, kinds, dates)
    np.testing.assert_array_equal(np.nan_to_num(x, nan=-1), np.nan_to_num(x2, nan=-1))
    np.testing.assert_array_equal(scale, scale2)
    lag0 = FEATURE_NAMES.index("lag_0")
    np.testing.assert_allclose(x[::14, lag0] * scale[::14], panel.values[:, 90])


def test_it_learns_a_weekly_pattern_and_beats_a_flat_forecast() -> None:
    panel = _panel()
    model = _small().fit(panel.head(266))
    fc = model.predict(panel.values[:, :266], 14, end_days=panel.dates[265])
    assert isinstance(fc, QuantileForecast)
    assert fc.daily.shape == (30, 14, fc.levels.size)
    actual = panel.values[:, 266:280]
    flat = np.nanmean(panel.values[:, 238:266], axis=1, keepdims=True)
    err_model = np.abs(fc.mean - actual).mean()
    err_flat = np.abs(flat - actual).mean()
    assert err_model < 0.8 * err_flat
    lo, hi = fc.daily[..., 2], fc.daily[..., 6]  # q0.1, q0.9
    inside = ((actual >= lo) & (actual <= hi)).mean()
    assert 0.6 < inside <= 1.0
    # counts in, integer quantiles out; the total is at least the first day
    assert np.all(fc.daily == np.round(fc.daily))
    assert np.all(fc.cumulative[:, 0] >= fc.daily[:, 0])
    assert np.all(np.diff(fc.cumulative, axis=1) >= 0)


def test_no_history_forecasts_zero_and_unfitted_or_long_horizons_fail() -> None:
    panel = _panel(n=10, days=140)
    with pytest.raises(NotFittedError):
        _small().predict(panel.values, 7, end_days=panel.dates[-1])
    model = _small().fit(panel)
    windows = panel.values.copy()
    windows[0] = np.nan
    fc = model.predict(windows, 7, end_days=panel.dates[-1])
    assert fc.horizon == 7 and np.all(fc.daily[0] == 0) and np.all(fc.mean[0] == 0)
    assert np.all(fc.mean[1:].sum(axis=1) > 0)
    with pytest.raises(ValueError, match="trained horizon"):
        model.predict(panel.values, 15, end_days=panel.dates[-1])


def test_backtest_runs_it_by_name() -> None:
    panel = _panel(n=12, days=200)
    result = rolling_origin(panel, ["seasonal_naive", "lightgbm"], horizon=14, folds=2,
                            factory=lambda name: _small() if name == "lightgbm"
                            else make_forecaster(name))
    scores = result.models["lightgbm"]
    assert scores["fit_seconds"] > 0
    assert 0.0 < scores["coverage_95"] <= 1.0
    assert scores["mase"] < result.models["seasonal_naive"]["mase"]


def test_origins_without_a_recent_level_do_not_train() -> None:
    panel = _panel(n=6, days=280)
    values = panel.values.copy()
    values[:, :] = np.nan_to_num(values) * 1000.0 + 5000.0  # turnover-like levels
    values[0, 100:200] = np.nan  # a store missing for 100 days
    gappy = Panel(panel.ids, panel.start, values)
    _, y, _ = _small().training_rows(gappy)
    # Origins just after the gap would be scaled by the floor (0.1): targets ~ 10^5.
    assert y.max() < 20.0
    pairs, origins = _small()._sample(gappy)
    after_gap = (pairs == 0) & (origins >= 200) & (origins < 206)
    assert not after_gap.any()
    assert ((pairs == 0) & (origins >= 206)).any()  # a week back, it trains again


def test_quantile_leaf_rows_grow_into_the_tails() -> None:
    from forecasting.lightgbm_peer import quantile_leaf_rows

    assert quantile_leaf_rows(0.975, 50, 0) == 50  # off: min_child_samples alone
    assert quantile_leaf_rows(0.975, 50, 10) == 400
    assert quantile_leaf_rows(0.025, 50, 10) == 400
    assert quantile_leaf_rows(0.9, 50, 10) == 100
    assert quantile_leaf_rows(0.5, 50, 10) == 50  # 20 rows beyond the median: the floor holds


def test_every_quantile_leaf_holds_enough_rows_beyond_its_level() -> None:
    # A leaf's output is its level's percentile of its rows' residuals: a 0.975 leaf of 20
    # rows answers with its largest residual, which on lumpy demand is one wholesale order.
    from forecasting.lightgbm_peer import quantile_leaf_rows

    panel = _panel(n=20, days=200)
    model = _small(tail_leaf_rows=4).fit(panel)
    for level, booster in zip(model._levels, model._models[1:], strict=True):
        need = quantile_leaf_rows(float(level), 20, 4)
        counts = _leaf_counts(booster.dump_model()["tree_info"])
        assert min(counts) >= need, (level, min(counts), need)
    plain = _small(tail_leaf_rows=0).fit(panel)  # without: 0.975 leaves below that
    counts = _leaf_counts(plain._models[-1].dump_model()["tree_info"])
    assert min(counts) < quantile_leaf_rows(0.975, 20, 4)


def _leaf_counts(trees: list[dict[str, object]]) -> list[int]:
    out: list[int] = []

    def walk(node: dict[str, object]) -> None:
        if "left_child" not in node:  # a leaf
            out.append(int(node.get("leaf_count", 0)))  # type: ignore[call-overload]
            return
        walk(node["left_child"])  # type: ignore[arg-type]
        walk(node["right_child"])  # type: ignore[arg-type]

    for tree in trees:
        walk(tree["tree_structure"])  # type: ignore[arg-type]
    return out


def test_quantile_boosters_learn_from_clipped_targets() -> None:
    # Lumpy demand: rare wholesale orders of 200-2000 units on a few units a day. The quantile
    # boosters learn from scaled targets clipped at their pooled 0.99 quantile (per kind):
    # the top booster's answers stay near the clip, far below what the spikes teach it.
    panel = _panel(n=20, days=200)
    rng = np.random.default_rng(3)
    values = panel.values.copy()
    spikes = (rng.random(values.shape) < 0.01) & np.isfinite(values)
    values[spikes] = rng.integers(200, 2000, int(spikes.sum()))
    lumpy = Panel(panel.ids, panel.start, values)
    capped = _small(target_cap_quantile=0.99).fit(lumpy)
    x, y, kind = capped.training_rows(lumpy)
    cap = max(float(np.quantile(y[kind == k], 0.99)) for k in (0, 1))
    top = capped._booster_predict(len(capped._models) - 1, x).max()
    plain = _small(target_cap_quantile=1.0).fit(lumpy)  # off: the spikes reach the answers
    top_plain = plain._booster_predict(len(plain._models) - 1, x).max()
    assert top < 1.5 * cap < top_plain
