"""The data's own holidays (`LSTMConfig.data_holidays`): a panel's holiday column
(`Covariates.holiday`: Rossmann's state_holiday, FreshRetailNet's holiday_flag) replaces the
date calendar's flag in the LSTM's holiday input and in the head's flags of the forecast
days; without the column everything is as before, bit for bit; a worker serves it (the
stream's side: test_streams_holiday_calendar.py)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from forecasting.base import IncrementalForecaster
from forecasting.covariates import Covariates, holiday_value, stack
from forecasting.data import Panel, load_panel
from forecasting.lstm.config import LSTMConfig
from forecasting.lstm.features import INPUT_DIM, holiday_flags
from tests.support.lstm import fit_small_mix, train_small_lstm

torch = pytest.importorskip("torch")

START = np.datetime64("2011-01-03")
END = np.datetime64("2012-03-01")


def _panel(n: int = 12, days: int = 240, seed: int = 0, holidays: bool = True) -> Panel:
    """Demand that drops to a fifth on each series' own holidays (about one day in ten, not
    the UK's), promotions none."""
    rng = np.random.default_rng(seed)
    hol = (rng.random((n, days + 14)) < 0.1).astype(np.float64)
    level = rng.gamma(4.0, 2.0, (n, 1))
    values = rng.poisson(level * (1.0 - 0.8 * hol[:, :days])).astype(np.float64)
    promo = np.zeros_like(hol)
    cov = Covariates(START, promo, np.ones_like(promo), hol if holidays else None)
    return Panel(tuple(f"s{i}" for i in range(n)), START, values, cov)


def _train(panel: Panel, **over: object):  # type: ignore[no-untyped-def]
    return train_small_lstm(panel, **over)


def test_the_loader_reads_the_holiday_column_and_keeps_the_fingerprint(
        tmp_path: Path) -> None:
    rows = ["unique_id,ds,y,promo,state_holiday",
            "a,2015-04-05,3,0,none", "a,2015-04-06,0,0,easter", "a,2015-04-07,4,1,0",
            "b,2015-04-05,5,0,a", "b,2015-04-06,6,0,none", "b,2015-04-07,7,0,"]
    with_col = tmp_path / "with.csv.gz"
    with gzip.open(with_col, "wt") as fh:
        fh.write("\n".join(rows) + "\n")
    without = tmp_path / "without.csv"
    without.write_text("\n".join(",".join(r.split(",")[:4]) for r in rows) + "\n")
    panel = load_panel(with_col, covariates=True)
    assert panel.covariates is not None and panel.covariates.holiday is not None
    np.testing.assert_array_equal(panel.covariates.holiday, [[0, 1, 0], [1, 0, 0]])
    plain = load_panel(without, covariates=True)
    assert plain.covariates is not None and plain.covariates.holiday is None
    # the column stays out of the digest: the panels' fingerprints of before it
    assert panel.fingerprint() == plain.fingerprint()
    # without covariates asked for, or without a promotion/price column: nothing read
    assert load_panel(with_col).covariates is None
    assert [holiday_value(v) for v in ("none", "0", "", "public", "christmas", "1")] == [
        0, 0, 0, 1, 1, 1]


def test_subset_and_stack_carry_the_holidays() -> None:
    cov = _panel(n=4, days=30).covariates
    assert cov is not None and cov.holiday is not None
    sub = cov.subset([2, 0])
    assert sub.holiday is not None
    np.testing.assert_array_equal(sub.holiday, cov.holiday[[2, 0]])
    both = stack([(4, cov), (2, None)])
    assert both is not None and both.holiday is not None
    np.testing.assert_array_equal(both.holiday[:4], cov.holiday)
    assert not both.holiday[4:].any()
    first = np.full(4, START + 3)
    np.testing.assert_array_equal(cov.holiday_rows(first, 5), cov.holiday[:, 3:8])
    bare = Covariates.neutral(2, START, 5)
    assert bare.holiday_rows(np.full(2, START), 5) is None
    assert stack([(2, bare)]).holiday is None  # type: ignore[union-attr]


def test_off_keeps_the_config_json_and_the_durable_state_fingerprint() -> None:
    from forecasting.lstm.durable import weights_fingerprint

    off = LSTMConfig(data_holidays=False)
    assert "data_holidays" not in off.to_json()
    assert LSTMConfig.from_json(off.to_json()).data_holidays is False
    on = LSTMConfig()  # the default since the stream serves the calendar
    assert on.data_holidays
    assert LSTMConfig.from_json(on.to_json()) == on
    weights = {"w": np.arange(6, dtype=np.float32)}
    old = LSTMConfig(year_ago_gaps="zero", data_holidays=False)  # pinned at baac257
    assert weights_fingerprint(old, weights, 0.25, 1.5) == 11083735363336708754
    assert weights_fingerprint(LSTMConfig(year_ago_gaps="zero", data_holidays=True),
                               weights, 0.25, 1.5) != 11083735363336708754


def test_training_reads_the_column_in_place_of_the_calendar() -> None:
    from forecasting.lstm.training import _prepare

    panel = _panel(n=5, days=120)
    cov = panel.covariates
    assert cov is not None and cov.holiday is not None
    on, _, _ = _prepare(panel, LSTMConfig(horizon=7, val_days=21, data_holidays=True,
                                          year_ago=False, year_ago_prior=False),
                        torch.device("cpu"))
    off, _, _ = _prepare(panel, LSTMConfig(horizon=7, val_days=21, year_ago=False,
                                           year_ago_prior=False, data_holidays=False),
                         torch.device("cpu"))
    length = panel.n_days
    x_on, x_off = on.x.numpy(), off.x.numpy()
    np.testing.assert_array_equal(x_on[..., INPUT_DIM - 1], cov.holiday[:, :length])
    np.testing.assert_array_equal(x_off[..., INPUT_DIM - 1],
                                  np.broadcast_to(holiday_flags(panel.dates), (5, length)))
    np.testing.assert_array_equal(x_on[..., : INPUT_DIM - 1], x_off[..., : INPUT_DIM - 1])
    ahead = cov.holiday[:, np.arange(length)[:, None] + np.arange(1, 8)[None, :]]
    np.testing.assert_array_equal(on.holidays.numpy()[..., :7], ahead)
    np.testing.assert_array_equal(on.holidays.numpy()[..., 7:], off.holidays.numpy()[..., 7:])


def test_a_panel_without_the_column_trains_the_net_of_before_bit_for_bit() -> None:
    bare = _panel(holidays=False)
    on, off = _train(bare, data_holidays=True), _train(bare, data_holidays=False)
    assert on.config == off.config and not on.config.data_holidays
    for (name, a), (_, b) in zip(on.net.state_dict().items(), off.net.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    assert on.calibration == off.calibration


def test_served_forecasts_read_the_column_on_both_backends_and_a_worker_loads_it(
        tmp_path: Path) -> None:
    from forecasting.lstm import save_artifact
    from forecasting.lstm.artifact_files import load_numpy
    from forecasting.lstm.serving import head_holiday, head_scale, window_holiday
    from streams.forecaster_setup import _load

    panel = _panel(days=420)
    cov = panel.covariates
    assert cov is not None and cov.holiday is not None
    model = _train(panel, data_holidays=True, year_ago=True, year_ago_prior=True,
                   max_epochs=2)
    assert model.config.data_holidays
    hist = panel.head(panel.n_days - 14)
    end = hist.dates[-1]
    got = model.predict(hist.values, 7, end_days=end, covariates=cov)
    # predict(covariates) = encode with the windows' flags + forecast_known
    flags = window_holiday(model.config, cov, end, *hist.values.shape)
    assert flags is not None
    state = model.encode(hist.values, end, holiday=flags)
    np.testing.assert_array_equal(model.forecast_known(state, 7, cov).mean, got.mean)
    # the flags move both the state (past days) and the head (forecast days)
    assert np.abs(model.encode(hist.values, end).h.numpy() - state.h.numpy()).max() > 1e-6
    ahead = head_holiday(model.config, state, cov)
    assert ahead is not None
    np.testing.assert_array_equal(ahead, cov.holiday[:, hist.n_days : hist.n_days + 7])
    packed = model.head_output(state, integer=False, holiday=ahead)
    assert np.abs(packed - model.head_output(state, integer=False)).max() > 1e-6
    unpacked = model._forecast_unpacked(state, model._tensor(head_scale(state)), False,
                                        None, ahead)
    np.testing.assert_allclose(unpacked, packed, rtol=1e-4, atol=1e-3)
    # the numpy backend serves the same numbers
    save_artifact(model, tmp_path, data_fingerprint="test")
    again = load_numpy(tmp_path).predict(hist.values, 7, end_days=end, covariates=cov)
    np.testing.assert_allclose(again.mean, got.mean, rtol=1e-3, atol=1e-3)
    # the stream serves the flags from its holiday calendar: a worker loads the model
    served = _load("lstm", tmp_path, "cpu")
    assert isinstance(served, IncrementalForecaster) and served.reads_holidays
    # with no flag known, the state reads "no holiday", not the date calendar's
    np.testing.assert_array_equal(
        model.encode(hist.values, end).h.numpy(),
        model.encode(hist.values, end, holiday=np.zeros(hist.values.shape)).h.numpy())


def test_the_mix_hands_the_holidays_to_its_lstm_part() -> None:
    panel = _panel(n=10, days=420)
    model, hist = fit_small_mix(panel, data_holidays=True)
    assert model.lstm.config.data_holidays
    cov = panel.covariates
    assert cov is not None and cov.holiday is not None
    end = hist.dates[-1]
    got = model.predict(hist.values, 7, end_days=end, covariates=cov)
    state = model.encode(hist.values, end, holiday=cov.holiday[:, : hist.n_days])
    np.testing.assert_array_equal(model.forecast(state, 7, covariates=cov).mean, got.mean)
    part = model.lstm.forecast_known(state, 7, cov)
    assert np.abs(part.mean - model.lstm.forecast(state, 7).mean).max() > 1e-4


def test_lightgbm_holiday_features_serve_as_they_train() -> None:
    from forecasting.lag_features import (
        FEATURE_NAMES,
        PROMO_FEATURES,
        LagTable,
        lag_features,
        serving_features,
        serving_grid,
    )

    rng = np.random.default_rng(3)
    n, length, big_h = 5, 60, 7
    w = rng.poisson(4.0, (n, length)).astype(np.float64)
    end = np.datetime64("2015-06-01")
    dates = end + np.arange(-length + 1, big_h + 1).astype("timedelta64[D]")
    cov = ((rng.random((n, length + big_h)) < 0.2).astype(np.float64),
           np.ones((n, length + big_h)))
    hol = (rng.random((n, length + big_h)) < 0.3).astype(np.float64)
    steps, kinds, rows = serving_grid(n, big_h)
    ref, _ = lag_features(LagTable.of(w), rows, np.full(rows.size, length - 1),
                          np.tile(steps, n), np.tile(kinds, n), dates, "uk", cov, False, hol)
    got, _ = serving_features(w, big_h, dates, "uk", cov, False, holiday=hol)
    np.testing.assert_array_equal(got, ref)
    width = len(FEATURE_NAMES) + len(PROMO_FEATURES)
    plain, _ = serving_features(w, big_h, dates, "uk", cov, False)
    np.testing.assert_array_equal(got[:, :width], plain)  # the rest as before
    own = got[:, width:].reshape(n, 2, big_h, 2)
    np.testing.assert_array_equal(own[:, 0, :, 0], hol[:, length:])  # daily: target's flag
    np.testing.assert_array_equal(own[:, 0, :, 1], hol[:, length:])
    share = np.cumsum(hol[:, length:], axis=1) / np.arange(1, big_h + 1)
    np.testing.assert_allclose(own[:, 1, :, 1], share)  # cumulative: share over the span


def test_lightgbm_reads_the_holidays_only_when_asked_and_the_column_is_there(
        tmp_path: Path) -> None:
    from forecasting.lag_features import HOLIDAY_FEATURES
    from forecasting.lightgbm_peer import LightGBMForecaster

    panel = _panel(n=10, days=200)
    small = {"n_estimators": 20, "num_leaves": 7, "min_child_samples": 10}
    on = LightGBMForecaster(7, data_holidays=True, **small).fit(panel)  # type: ignore[arg-type]
    off = LightGBMForecaster(7, data_holidays=False, **small).fit(panel)  # type: ignore[arg-type]
    assert on.feature_names[-2:] == HOLIDAY_FEATURES
    assert not set(HOLIDAY_FEATURES) & set(off.feature_names)
    cov = panel.covariates
    assert cov is not None and cov.holiday is not None
    hist = panel.head(150)
    a = on.predict(hist.values, 7, end_days=hist.dates[-1], covariates=cov)
    ones = Covariates(cov.start, cov.promo, cov.price_ratio, np.ones_like(cov.holiday))
    b = on.predict(hist.values, 7, end_days=hist.dates[-1], covariates=ones)
    assert np.abs(a.mean - b.mean).max() > 1e-3  # it reads them
    on.save(tmp_path / "on")
    again = LightGBMForecaster.load(tmp_path / "on")
    np.testing.assert_array_equal(
        again.predict(hist.values, 7, end_days=hist.dates[-1], covariates=cov).mean, a.mean)
    off.save(tmp_path / "off")
    assert "data_holidays" not in (tmp_path / "off" / "lightgbm.json").read_text()
    assert "holidays" not in (tmp_path / "off" / "lightgbm.json").read_text()
    # without the column: the model of before, bit for bit
    bare = _panel(n=10, days=200, holidays=False)
    x_on = LightGBMForecaster(7, data_holidays=True, **small).fit(bare)  # type: ignore[arg-type]
    x_off = LightGBMForecaster(7, data_holidays=False, **small).fit(bare)  # type: ignore[arg-type]
    assert x_on.feature_names == x_off.feature_names
    np.testing.assert_array_equal(x_on.predict(bare.values, 7, end_days=bare.dates[-1]).mean,
                                  x_off.predict(bare.values, 7, end_days=bare.dates[-1]).mean)


def test_a_worker_loads_a_mix_whose_lightgbm_reads_the_holidays(tmp_path: Path) -> None:
    from forecasting.combination import LSTMLightGBMForecaster, save_combination
    from forecasting.registry import make_forecaster
    from streams.forecaster_setup import _load

    torch.set_num_threads(1)
    panel = _panel(n=10, days=420)
    model = make_forecaster("lstm_lgbm", device="cpu", horizon=7, max_epochs=1, hidden=8,
                            head_hidden=8, val_days=21, data_holidays=False)
    assert isinstance(model, LSTMLightGBMForecaster)
    model.lightgbm_options = {"n_estimators": 10, "num_leaves": 7, "min_child_samples": 10,
                              "data_holidays": True}
    model.fit(panel)
    assert not model.lstm.config.data_holidays
    assert model.lightgbm is not None and model.lightgbm.holidays_used
    save_combination(model, tmp_path, data_fingerprint="test")
    served = _load("lstm_lgbm", tmp_path, "cpu")
    assert isinstance(served, LSTMLightGBMForecaster)
    assert served.lightgbm is not None and served.lightgbm.holidays_used
