"""Known-in-advance covariates: the loader reads them, panels carry them past the demand's last
day, LightGBM's features read the target day's promotion, and a promotion known for one
forecast day moves that day's forecast and no other."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from forecasting.backtest import rolling_origin
from forecasting.covariates import Covariates
from forecasting.data import Panel, load_panel
from forecasting.lag_features import (
    FEATURE_NAMES,
    PRICE_FEATURES,
    PROMO_FEATURES,
    LagTable,
    lag_features,
)

START = np.datetime64("2024-01-01")


def _write(path: Path, header: str, rows: list[str]) -> Path:
    with gzip.open(path, "wt") as fh:
        fh.write(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_loader_reads_promo_and_price_ratio_with_defaults_for_missing_days(
        tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv.gz", "unique_id,ds,y,activity_flag,discount",
                  ["a,2024-01-01,3,1,0.8", "a,2024-01-03,5,0,", "b,2024-01-02,1,0,1.0"])
    panel = load_panel(path, covariates=True)
    cov = panel.covariates
    assert cov is not None and cov.start == START
    np.testing.assert_array_equal(cov.promo, [[1, 0, 0], [0, 0, 0]])
    # a day without a row, or an empty cell, is full price
    np.testing.assert_array_equal(cov.price_ratio, [[0.8, 1.0, 1.0], [1.0, 1.0, 1.0]])
    assert load_panel(path).covariates is None  # off unless asked for
    assert load_panel(path).fingerprint() != panel.fingerprint()


def test_a_file_without_covariate_columns_loads_as_before(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv.gz", "unique_id,ds,y", ["a,2024-01-01,3", "a,2024-01-02,4"])
    with_flag, without = load_panel(path, covariates=True), load_panel(path)
    assert with_flag.covariates is None
    assert with_flag.fingerprint() == without.fingerprint()


def test_rossmann_style_promo_column_is_read_without_a_price(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.csv.gz", "unique_id,ds,y,open,promo",
                  ["s1,2024-01-01,100,1,1", "s1,2024-01-02,0,0,0"])
    cov = load_panel(path, covariates=True).covariates
    assert cov is not None
    np.testing.assert_array_equal(cov.promo, [[1, 0]])
    np.testing.assert_array_equal(cov.price_ratio, [[1, 1]])


def test_head_keeps_the_covariates_whole_and_subset_picks_rows() -> None:
    promo = np.zeros((3, 20))
    promo[1, 15] = 1.0
    cov = Covariates(START, promo, np.ones((3, 20)))
    panel = Panel(("a", "b", "c"), START, np.ones((3, 20)), cov)
    head = panel.head(10)
    assert head.covariates is cov  # day 15's promotion is known on day 10
    sub = panel.subset([1])
    assert sub.covariates is not None
    np.testing.assert_array_equal(sub.covariates.promo, promo[[1]])


def test_span_outside_the_grid_reads_the_defaults() -> None:
    cov = Covariates(START, np.ones((1, 3)), np.full((1, 3), 0.5))
    promo, price = cov.span(START - np.timedelta64(1, "D"), 5)
    np.testing.assert_array_equal(promo, [[0, 1, 1, 1, 0]])
    np.testing.assert_array_equal(price, [[1, 0.5, 0.5, 0.5, 1]])


def test_covariate_features_read_the_target_day_and_leave_demand_features_alone() -> None:
    rng = np.random.default_rng(0)
    values = rng.poisson(5.0, (2, 60)).astype(np.float64)
    table = LagTable.of(values)
    horizon = 7
    dates = START + np.arange(60 + horizon).astype("timedelta64[D]")
    promo = np.zeros((2, 60 + horizon))
    promo[0, 62] = 1.0  # step 3 of the origin at column 59
    price = np.ones((2, 60 + horizon))
    price[0, 62] = 0.7
    rows = np.repeat([0, 1], 2 * horizon)
    origins = np.full(rows.size, 59)
    steps = np.tile(np.tile(np.arange(1, horizon + 1), 2), 2)
    kinds = np.tile(np.repeat([0, 1], horizon), 2)
    plain, scale = lag_features(table, rows, origins, steps, kinds, dates)
    x, scale2 = lag_features(table, rows, origins, steps, kinds, dates,
                             covariates=(promo, price), price=True)
    names = FEATURE_NAMES + PROMO_FEATURES + PRICE_FEATURES
    assert x.shape[1] == len(names)
    promo_only, _ = lag_features(table, rows, origins, steps, kinds, dates,
                                 covariates=(promo, price))
    np.testing.assert_array_equal(np.nan_to_num(promo_only, nan=-1),
                                  np.nan_to_num(x[:, : promo_only.shape[1]], nan=-1))
    np.testing.assert_array_equal(np.nan_to_num(x[:, : len(FEATURE_NAMES)], nan=-1),
                                  np.nan_to_num(plain, nan=-1))
    np.testing.assert_array_equal(scale, scale2)
    col = {name: i for i, name in enumerate(names)}
    daily0 = (rows == 0) & (kinds == 0)
    np.testing.assert_array_equal(x[daily0, col["promo_target"]], steps[daily0] == 3)
    # a daily row's span is its own day; a cumulative row's covers (origin, target]
    np.testing.assert_array_equal(x[daily0, col["promo_span"]], steps[daily0] == 3)
    cum0 = (rows == 0) & (kinds == 1)
    np.testing.assert_allclose(x[cum0, col["promo_span"]],
                               np.where(steps[cum0] >= 3, 1.0 / steps[cum0], 0.0))
    np.testing.assert_array_equal(x[daily0, col["price_target"]],
                                  np.where(steps[daily0] == 3, 0.7, 1.0))
    assert np.all(x[rows == 1, col["promo_target"]] == 0.0)


# --- LightGBM with covariates --------------------------------------------------------------
lgb = pytest.importorskip("lightgbm")

from forecasting.lightgbm_peer import LightGBMForecaster  # noqa: E402


def _promo_panel(n: int = 40, days: int = 200, seed: int = 0) -> Panel:
    """Demand that triples on promotion days (random, about one day in six)."""
    rng = np.random.default_rng(seed)
    level = rng.gamma(3.0, 3.0, (n, 1))
    promo = (rng.random((n, days + 14)) < 0.16).astype(np.float64)
    price = np.where(promo > 0, 0.8, 1.0)
    values = rng.poisson(level * (1.0 + 2.0 * promo[:, :days])).astype(np.float64)
    cov = Covariates(START, promo, price)
    return Panel(tuple(str(i) for i in range(n)), START, values, cov)


def _small() -> LightGBMForecaster:
    return LightGBMForecaster(14, n_estimators=60, num_leaves=15, min_child_samples=20)


def test_a_known_promotion_moves_its_days_forecast_and_no_other() -> None:
    panel = _promo_panel()
    model = _small().fit(panel)
    assert model.covariates_used
    n, days = panel.values.shape
    end = panel.dates[-1]
    none = Covariates.neutral(n, START, days + 14)
    promo = none.promo.copy()
    promo[:, days + 4] = 1.0  # every series: a promotion planned for forecast day 5
    planned = Covariates(START, promo, np.where(promo > 0, 0.8, 1.0))
    base = model.predict(panel.values, 14, end_days=end, covariates=none)
    lifted = model.predict(panel.values, 14, end_days=end, covariates=planned)
    median = 4  # the 0.5 level
    assert np.mean(lifted.daily[:, 4, median] > base.daily[:, 4, median]) > 0.9
    assert lifted.mean[:, 4].sum() > 1.5 * base.mean[:, 4].sum()
    others = np.r_[0:4, 5:14]
    np.testing.assert_array_equal(lifted.daily[:, others], base.daily[:, others])
    np.testing.assert_array_equal(lifted.mean[:, others], base.mean[:, others])
    # the lead-time total from day 5 on includes the promotion
    assert np.all(lifted.cumulative[:, 13, median] >= base.cumulative[:, 13, median])
    np.testing.assert_array_equal(lifted.cumulative[:, :4], base.cumulative[:, :4])
    # no covariates at all: nothing planned, the same as the neutral ones
    plain = model.predict(panel.values, 14, end_days=end)
    np.testing.assert_array_equal(plain.daily, base.daily)


def test_covariates_beat_demand_only_on_promotion_driven_demand() -> None:
    panel = _promo_panel(seed=1)
    demand_only = Panel(panel.ids, panel.start, panel.values)
    with_cov = rolling_origin(panel, ["lightgbm"], horizon=14, folds=2, refit=False,
                              factory=lambda _: _small())
    without = rolling_origin(demand_only, ["lightgbm"], horizon=14, folds=2, refit=False,
                             factory=lambda _: _small())
    assert with_cov.meta["covariates"] and not without.meta["covariates"]
    assert with_cov.models["lightgbm"]["pinball"] < 0.8 * without.models["lightgbm"]["pinball"]


def test_a_model_without_covariates_ignores_them_and_artifacts_keep_the_flag(
        tmp_path: Path) -> None:
    panel = _promo_panel(n=20, days=120)
    plain = _small().fit(Panel(panel.ids, panel.start, panel.values))
    assert not plain.covariates_used
    a = plain.predict(panel.values, 14, end_days=panel.dates[-1])
    b = plain.predict(panel.values, 14, end_days=panel.dates[-1], covariates=panel.covariates)
    np.testing.assert_array_equal(a.daily, b.daily)

    fitted = _small().fit(panel)
    fitted.save(tmp_path / "m")
    loaded = LightGBMForecaster.load(tmp_path / "m")
    assert loaded.covariates_used
    before = fitted.predict(panel.values, 14, end_days=panel.dates[-1],
                            covariates=panel.covariates)
    after = loaded.predict(panel.values, 14, end_days=panel.dates[-1],
                           covariates=panel.covariates)
    np.testing.assert_array_equal(before.daily, after.daily)
    # an artifact written before covariates existed has no "covariates" key: none used
    plain.save(tmp_path / "old")
    old_meta = json.loads((tmp_path / "old" / "lightgbm.json").read_text())
    del old_meta["covariates"], old_meta["config"]["covariates"]
    (tmp_path / "old" / "lightgbm.json").write_text(json.dumps(old_meta))
    assert not LightGBMForecaster.load(tmp_path / "old").covariates_used
