"""`lstm_lgbm`: per-level weights and the mix's interval calibration learned on the LSTM's
validation days only, a saved model loads back to the same forecasts (one saved before the
mix was calibrated serves the plain mix), and serving from the stream's day ring gives the
batch (backtest) forecast of the same day."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from forecasting.base import QuantileForecast
from forecasting.data import Panel

pytest.importorskip("lightgbm")
pytest.importorskip("torch")

import forecasting.combination as combination_module
from forecasting.backtest import rolling_origin
from forecasting.calibration import IntervalCalibration
from forecasting.combination import (
    CombinationWeights,
    LSTMLightGBMForecaster,
    combine,
    learn_calibration,
    learn_weights,
    save_combination,
    state_classes,
)
from forecasting.demand_class import demand_classes
from forecasting.lightgbm_peer import LightGBMForecaster
from forecasting.model_dir import load_model_dir
from forecasting.registry import forecaster_info, make_forecaster

LEVELS = (0.1, 0.5, 0.9)
START = np.datetime64("2011-01-03")
TINY_LGBM = {"n_estimators": 8, "num_leaves": 7, "min_child_samples": 10, "max_rows": 20_000}


def _forecast(daily: np.ndarray) -> QuantileForecast:
    """A forecast whose every level is `daily` (n, H) (cumulative: its running sum)."""
    d = np.repeat(daily[..., None], len(LEVELS), axis=2)
    return QuantileForecast(LEVELS, d, np.cumsum(d, axis=1), daily)


def test_weights_pick_the_model_that_fits_the_validation_days_and_stay_in_0_1() -> None:
    rng = np.random.default_rng(0)
    actual = [rng.poisson(5.0, (20, 7)).astype(float) for _ in range(3)]
    good = [_forecast(a) for a in actual]
    bad = [_forecast(np.full_like(a, 40.0)) for a in actual]
    w = learn_weights(good, bad, actual, integer=True)
    assert w.daily == (1.0, 1.0, 1.0) and w.cumulative == (1.0, 1.0, 1.0) and w.mean == 1.0
    w = learn_weights(bad, good, actual, integer=True)
    assert w.daily == (0.0, 0.0, 0.0) and w.mean == 0.0
    noisy = [_forecast(a + rng.normal(0, 2, a.shape).clip(-a, None)) for a in actual]
    w1 = learn_weights(noisy, bad, actual, integer=False)
    w2 = learn_weights(noisy, bad, actual, integer=False)
    assert w1 == w2  # reproducible
    assert all(0.0 <= x <= 1.0 for x in (*w1.daily, *w1.cumulative, w1.mean))
    assert w1.report["val_daily_pinball_mix"] <= min(w1.report["val_daily_pinball_lstm"],
                                                     w1.report["val_daily_pinball_lightgbm"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        CombinationWeights(LEVELS, (1.2, 0, 0), (0, 0, 0), 0.5)


def test_shrunk_weights_move_each_level_toward_the_block_pooled_weight() -> None:
    """`weight_shrink`: 0 is the per-level weights bit for bit, 1 one weight per block (the
    one that minimises the block's summed pinball), between them the straight line."""
    rng = np.random.default_rng(2)
    actual = [rng.poisson(8.0, (60, 7)).astype(float) for _ in range(3)]
    # the LSTM's low quantile is right and its top one far too high; LightGBM the reverse:
    # per level the weights differ, pooled they meet in between
    lo, hi = np.array([0.5, 1.0, 3.0]), np.array([0.2, 1.0, 1.3])
    lstm = [QuantileForecast(LEVELS, a[..., None] * hi, np.cumsum(a[..., None] * hi, axis=1),
                             a) for a in actual]
    lgbm = [QuantileForecast(LEVELS, a[..., None] * lo, np.cumsum(a[..., None] * lo, axis=1),
                             a) for a in actual]
    own = learn_weights(lstm, lgbm, actual, integer=False)
    assert learn_weights(lstm, lgbm, actual, integer=False, shrink=0.0) == own
    assert len(set(own.daily)) > 1  # the levels disagree
    pooled = learn_weights(lstm, lgbm, actual, integer=False, shrink=1.0)
    assert len(set(pooled.daily)) == 1 and len(set(pooled.cumulative)) == 1
    assert pooled.daily[0] == pooled.report["val_daily_weight_pooled"]
    assert pooled.mean == own.mean  # one weight already
    half = learn_weights(lstm, lgbm, actual, integer=False, shrink=0.5)
    np.testing.assert_allclose(half.daily, 0.5 * (np.array(own.daily) + pooled.daily[0]))
    np.testing.assert_allclose(half.cumulative,
                               0.5 * (np.array(own.cumulative) + pooled.cumulative[0]))
    # the pooled weight is the best single one for the block's summed pinball
    grid = np.linspace(0, 1, 21)
    y = np.concatenate(actual)
    a_d, b_d = (np.concatenate([f.daily for f in part]) for part in (lstm, lgbm))

    def summed(w: float) -> float:
        q = w * a_d + (1 - w) * b_d
        return float(sum(np.mean(np.maximum(t * (y - q[..., k]), (t - 1) * (y - q[..., k])))
                         for k, t in enumerate(LEVELS)))
    assert summed(pooled.daily[0]) <= min(summed(w) for w in grid) + 1e-12
    with pytest.raises(ValueError, match="shrink"):
        learn_weights(lstm, lgbm, actual, integer=False, shrink=1.5)
    # the daily block pooled, the cumulative levels each their own (`cumulative_shrink`)
    split = learn_weights(lstm, lgbm, actual, integer=False, shrink=1.0, cumulative_shrink=0.0)
    assert split.daily == pooled.daily and split.cumulative == own.cumulative
    assert split.mean == own.mean
    with pytest.raises(ValueError, match="shrink"):
        learn_weights(lstm, lgbm, actual, integer=False, cumulative_shrink=-0.1)
    model = make_forecaster("lstm_lgbm", device="cpu", horizon=7, weight_shrink=1.0,
                            cumulative_weight_shrink=0.0)
    assert isinstance(model, LSTMLightGBMForecaster)
    assert (model.weight_shrink, model.cumulative_weight_shrink) == (1.0, 0.0)
    # the registry's option reaches the model (what its fit learns with)
    model = make_forecaster("lstm_lgbm", device="cpu", horizon=7, weight_shrink=0.5)
    assert isinstance(model, LSTMLightGBMForecaster) and model.weight_shrink == 0.5
    assert make_forecaster("lstm_lgbm", device="cpu", horizon=7).weight_shrink == (
        combination_module.DEFAULT_WEIGHT_SHRINK)


def test_fall_weights_make_the_upper_cumulative_levels_pay_for_their_falls() -> None:
    """`cumulative_weights="fall"`: the cumulative levels >= FALL_LEVELS_FROM take the grid
    weight minimising pinball + (1 - tau) x the mean fall from one origin to the next; a
    LightGBM that tracks alternating demand (better pinball, but its levels fall every other
    origin) loses share there to a steady LSTM; the other levels, the daily block and the
    mean are the per-level weights bit for bit."""
    rng = np.random.default_rng(4)
    origins, n, h = 8, 40, 7
    means = [4.0 if k % 2 else 12.0 for k in range(origins)]  # high, low, high, ...
    actual = [rng.poisson(m, (n, h)).astype(float) for m in means]
    scale = np.array([0.6, 1.0, 1.4])

    def fc(level: np.ndarray) -> QuantileForecast:  # level (n, h): the median path
        d = level[..., None] * scale
        return QuantileForecast(LEVELS, d, np.cumsum(d, axis=1), level)
    lstm = [fc(np.full((n, h), 8.0)) for _ in range(origins)]
    lgbm = [fc(np.full((n, h), m)) for m in means]
    own = learn_weights(lstm, lgbm, actual, integer=True, cumulative_weights="levels")
    fall = learn_weights(lstm, lgbm, actual, integer=True, cumulative_weights="fall")
    assert learn_weights(lstm, lgbm, actual, integer=True) == fall  # the default
    assert combination_module.FALL_LEVELS_FROM == 0.9
    assert fall.cumulative[:2] == own.cumulative[:2]
    assert (fall.daily, fall.mean) == (own.daily, own.mean)
    assert fall.cumulative[2] > own.cumulative[2]  # the steady part gains the top level
    # the chosen weight is the grid's best for pinball + 0.1 x mean fall
    y = np.cumsum(np.stack(actual), axis=2)
    a = np.stack([f.cumulative[..., 2] for f in lstm])
    b = np.stack([f.cumulative[..., 2] for f in lgbm])

    def objective(w: float) -> float:
        m = np.round(np.maximum(w * a + (1 - w) * b, 0.0))
        pin = np.mean(np.maximum(0.9 * (y - m), -0.1 * (y - m)))
        return float(pin + 0.1 * np.mean(np.maximum(m[:-1] - m[1:], 0.0)))
    grid = np.linspace(0, 1, 21)
    assert objective(fall.cumulative[2]) == min(objective(w) for w in grid)
    assert objective(fall.cumulative[2]) < objective(own.cumulative[2])
    with pytest.raises(ValueError, match="cumulative"):
        learn_weights(lstm, lgbm, actual, integer=True, cumulative_weights="smooth")
    model = make_forecaster("lstm_lgbm", device="cpu", horizon=7, cumulative_weights="fall")
    assert isinstance(model, LSTMLightGBMForecaster) and model.cumulative_weights == "fall"
    assert make_forecaster("lstm_lgbm", device="cpu", horizon=7).cumulative_weights == (
        combination_module.DEFAULT_CUMULATIVE_WEIGHTS) == "fall"


def test_combine_keeps_quantiles_monotone_across_crossing_weights() -> None:
    a = QuantileForecast(LEVELS, np.full((1, 2, 3), 10.0), np.full((1, 2, 3), 10.0) * [[[1], [2]]],
                         np.full((1, 2), 10.0))
    b = QuantileForecast(LEVELS, np.zeros((1, 2, 3)), np.zeros((1, 2, 3)), np.zeros((1, 2)))
    w = CombinationWeights(LEVELS, (1.0, 0.5, 0.0), (1.0, 0.5, 0.0), 0.5)
    out = combine(a, b, w, integer=True)
    assert np.all(np.diff(out.daily, axis=2) >= 0)
    assert np.all(np.diff(out.cumulative, axis=1) >= 0)
    QuantileForecast(out.levels, out.daily, out.cumulative, out.mean)  # validates


def test_the_mix_calibration_moves_validation_coverage_toward_nominal() -> None:
    rng = np.random.default_rng(1)
    actual = [rng.poisson(20.0, (200, 7)).astype(float) for _ in range(4)]
    # both parts far too wide: the plain mix covers ~100% of the 80% interval
    wide = np.array([5.0, 20.0, 40.0])
    parts = [QuantileForecast(LEVELS, np.broadcast_to(wide, (200, 7, 3)).copy(),
                              np.cumsum(np.broadcast_to(wide, (200, 7, 3)), axis=1),
                              np.full((200, 7), 20.0)) for _ in actual]
    w = learn_weights(parts, parts, actual, integer=True)
    cal = learn_calibration(parts, parts, actual, w, integer=True, blocks="both")
    assert cal is not None and cal.cumulative is not None
    before, after = cal.report["val_daily_coverage_80_before"], \
        cal.report["val_daily_coverage_80_after"]
    assert before > 0.97 and abs(after - 0.8) < abs(before - 0.8) - 0.1
    assert cal.daily is not None and cal.daily[1] == 0.5  # the median keeps its level
    assert learn_calibration(parts, parts, actual, w, integer=True, blocks="off") is None
    daily_only = learn_calibration(parts, parts, actual, w, integer=True)  # the default
    assert daily_only is not None and daily_only.cumulative is None
    assert daily_only.daily == cal.daily
    # applied at serving: the interval of the served mix narrows the same way
    out = combine(parts[0], parts[0], w, integer=True, calibration=cal)
    plain = combine(parts[0], parts[0], w, integer=True)
    assert np.all(out.daily[..., 2] - out.daily[..., 0] < plain.daily[..., 2]
                  - plain.daily[..., 0])
    np.testing.assert_array_equal(out.mean, plain.mean)
    with pytest.raises(ValueError, match="mix_calibration"):
        learn_calibration(parts, parts, actual, w, integer=True, blocks="all")


def _panel(n: int = 12, days: int = 430, seed: int = 0) -> Panel:
    rng = np.random.default_rng(seed)
    week = np.array([2.0, 4.0, 0.5, 1.0, 6.0, 9.0, 3.0])
    level = rng.gamma(2.0, 2.0, (n, 1))
    values = rng.poisson(level * np.tile(week, days // 7 + 1)[None, :days] / week.mean())
    values = values.astype(np.float64)
    values[:2, :200] = np.nan  # late starters
    return Panel(tuple(str(i) for i in range(n)), START, values)


def _fit_tiny(panel: Panel, **config: int) -> tuple[LSTMLightGBMForecaster, list[int]]:
    """A tiny lstm_lgbm fitted on the panel's first 400 days, with the number of days each
    LightGBM fit saw."""
    model = make_forecaster("lstm_lgbm", device="cpu", horizon=7, max_epochs=1, hidden=8,
                            head_hidden=8, val_days=21, **config)
    assert isinstance(model, LSTMLightGBMForecaster)
    model.lightgbm_options = dict(TINY_LGBM)
    seen: list[int] = []
    fit = LightGBMForecaster.fit

    def spy(self: LightGBMForecaster, panel: Panel) -> LightGBMForecaster:
        seen.append(panel.n_days)
        return fit(self, panel)

    LightGBMForecaster.fit = spy  # type: ignore[method-assign]
    try:
        model.fit(panel.head(400))
    finally:
        LightGBMForecaster.fit = fit  # type: ignore[method-assign]
    return model, seen


@pytest.fixture(scope="module")
def fitted() -> tuple[LSTMLightGBMForecaster, Panel, list[int]]:
    panel = _panel()
    model, seen = _fit_tiny(panel)
    return model, panel, seen


def test_fit_learns_weights_on_the_validation_days_with_a_lightgbm_that_never_saw_them(
        fitted: tuple[LSTMLightGBMForecaster, Panel, list[int]]) -> None:
    model, _, seen = fitted
    val_days = model.lstm.config.val_days
    # First LightGBM: the days up to the first validation origin only; then the refit.
    assert seen == [400 - val_days, 400]
    assert model.weights is not None
    assert model.weights.report["val_origins"] == val_days - 7 + 1
    assert model.calibration is not None  # the default: the mix's intervals calibrated
    assert model.calibration.report["val_origins"] == val_days - 7 + 1
    assert model.fit_metrics["mix_calibration_val_origins"] == val_days - 7 + 1


def test_with_a_mix_window_the_weights_learn_on_days_the_lstm_never_stopped_on() -> None:
    model, seen = _fit_tiny(_panel(), mix_days=14)
    assert model.lstm.config.mix_days == 14
    # LightGBM forecasts the mix's last 14 days from the days before them
    assert seen == [400 - 14, 400]
    assert model.weights is not None and model.calibration is not None
    assert model.weights.report["val_origins"] == 14 - 7 + 1
    assert model.calibration.report["val_origins"] == 14 - 7 + 1
    # the LSTM stopped and calibrated on the 21 days before them
    assert model.fit_metrics["lstm_val_origins"] == 21 - 7 + 1


def test_a_backtest_learns_the_mix_calibration_without_reading_its_test_days(
        fitted: tuple[LSTMLightGBMForecaster, Panel, list[int]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    model, panel, _ = fitted
    sentinel = 10_000.0  # what the test days hold: the calibration must never see one
    values = panel.values[:, :414].copy()
    values[:, 400:] = sentinel
    leaky = Panel(panel.ids, panel.start, values)
    seen: list[np.ndarray] = []
    fit_levels = combination_module.fit_levels

    def spy(q: np.ndarray, y: np.ndarray, *args: object, **kwargs: object) -> object:
        seen.append(y)
        return fit_levels(q, y, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(combination_module, "fit_levels", spy)
    again = make_forecaster("lstm_lgbm", device="cpu", horizon=7, max_epochs=1, hidden=8,
                            head_hidden=8, val_days=21)
    assert isinstance(again, LSTMLightGBMForecaster)
    again.lightgbm_options = dict(TINY_LGBM)
    # refit once, first origin at day 400: trained on the 400 days before it
    rolling_origin(leaky, ["lstm_lgbm"], horizon=7, folds=2, refit=False,
                   factory=lambda name: again)
    val_days = again.lstm.config.val_days
    assert len(seen) == 1  # the daily block (the default): every validation origin's days
    assert seen[0].size == panel.n_series * (val_days - 7 + 1) * 7
    assert all(np.nanmax(y) < sentinel for y in seen)
    # what it learned is what a fit on those 400 days alone learns (the fixture's)
    assert again.calibration == model.calibration
    assert forecaster_info("lstm_lgbm").loads_artifact and not model.needs_fit


def test_saved_model_loads_back_to_the_same_forecasts(
        fitted: tuple[LSTMLightGBMForecaster, Panel, list[int]], tmp_path: Path) -> None:
    model, panel, _ = fitted
    history = panel.head(410)
    before = model.predict(history.values, 7, end_days=history.dates[-1])
    model_id = save_combination(model, tmp_path, data_fingerprint="test")
    loaded = load_model_dir(tmp_path, device="cpu", backend="torch")
    assert isinstance(loaded, LSTMLightGBMForecaster)
    assert loaded.model_version == f"lstm_lgbm-1+{model_id}" == model.model_version
    assert loaded.weights == model.weights
    assert model.calibration is not None and loaded.calibration == model.calibration
    assert json.loads((tmp_path / "combination.json").read_text())["calibration"] \
        == model.calibration.to_json()
    after = loaded.predict(history.values, 7, end_days=history.dates[-1])
    for field in ("daily", "cumulative", "mean"):
        np.testing.assert_array_equal(getattr(after, field), getattr(before, field))
    # The same content gets the same id.
    assert save_combination(loaded, tmp_path / "again", data_fingerprint="test") == model_id
    # Served on CPU without torch (the LSTM part in numpy): the same forecasts up to float32
    # rounding, the same version.
    served = load_model_dir(tmp_path, device="cpu")
    assert isinstance(served, LSTMLightGBMForecaster)
    assert type(served.lstm).__name__ == "NumpyLSTMForecaster"
    assert served.model_version == model.model_version
    numpy_after = served.predict(history.values, 7, end_days=history.dates[-1])
    for field in ("daily", "cumulative", "mean"):
        np.testing.assert_allclose(getattr(numpy_after, field), getattr(before, field),
                                   rtol=1e-4, atol=1e-3)


def test_an_artifact_saved_before_the_mix_was_calibrated_serves_the_plain_mix(
        fitted: tuple[LSTMLightGBMForecaster, Panel, list[int]], tmp_path: Path) -> None:
    model, panel, _ = fitted
    history = panel.head(410)
    save_combination(model, tmp_path, data_fingerprint="test")
    meta_path = tmp_path / "metadata.json"
    meta = json.loads(meta_path.read_text())
    del meta["calibration"]  # as written before the mix was calibrated
    meta_path.write_text(json.dumps(meta))
    old = load_model_dir(tmp_path, device="cpu", backend="torch")
    assert isinstance(old, LSTMLightGBMForecaster) and old.calibration is None
    served = old.predict(history.values, 7, end_days=history.dates[-1])
    state = model.encode(history.values, history.dates[-1])
    plain = combine(model.lstm.forecast(state, 7),
                    model._lightgbm_forecast(model.lightgbm, state, 7),  # type: ignore[arg-type]
                    model.weights, integer=True)  # type: ignore[arg-type]
    for field in ("daily", "cumulative", "mean"):
        np.testing.assert_array_equal(getattr(served, field), getattr(plain, field))
    calibrated = model.predict(history.values, 7, end_days=history.dates[-1])
    assert not np.array_equal(calibrated.daily, served.daily)  # the calibration did move it


def test_serving_from_the_streams_state_equals_the_batch_forecast_of_the_same_day(
        fitted: tuple[LSTMLightGBMForecaster, Panel, list[int]]) -> None:
    model, panel, _ = fitted
    assert isinstance(model.calibration, IntervalCalibration)  # served calibrated
    # The stream: a cold start on what it had on day 405, then one bucket a day into a
    # keyed store (the ring advanced in place), forecast on day 429.
    store = model.keyed_states(64)
    slots, _ = store.slots(list(panel.ids))
    store.scatter(slots, model.encode(panel.values[:, :406], panel.dates[405]))
    for t in range(406, 430):
        state = model.update(store.gather(slots), panel.values[:, t], panel.dates[t],
                             consume=True)
        store.scatter(slots, state)
    served = model.forecast(store.gather(slots), 7)
    batch = model.predict(panel.values, 7, end_days=panel.dates[-1])  # the backtest's call
    np.testing.assert_allclose(served.daily, batch.daily, atol=1e-6)
    np.testing.assert_allclose(served.cumulative, batch.cumulative, atol=1e-6)
    np.testing.assert_allclose(served.mean, batch.mean, rtol=1e-5, atol=1e-6)
    # and the LightGBM part reads no more than the ring: the last 392 days suffice
    short = model.predict(panel.values[:, -392:], 7, end_days=panel.dates[-1])
    lgbm_full = model.lightgbm.predict(panel.values, 7, end_days=panel.dates[-1])
    lgbm_ring = model.lightgbm.predict(panel.values[:, -392:], 7, end_days=panel.dates[-1])
    np.testing.assert_allclose(lgbm_ring.daily, lgbm_full.daily, atol=1e-6)
    assert short.daily.shape == batch.daily.shape


def test_weights_per_demand_class_serve_from_the_state_and_survive_the_artifact(
        fitted: tuple[LSTMLightGBMForecaster, Panel, list[int]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`class_weights`: each validation origin records the series' classes from the state's
    ring; a forecast reads them from the ring it serves from (the batch path goes through
    the same state) and mixes each series with its class's weights; saved and loaded, the
    same weights and forecasts."""
    model, panel, _ = fitted
    monkeypatch.setattr(combination_module, "MIN_CLASS_SERIES", 1)  # 12 series here
    found = model.validation_forecasts(panel.head(400))
    assert found is not None and found.classes is not None
    assert len(found.classes) == len(found.actual)
    weights, calibration, _ = model.learn_mix(found, class_weights=True)
    assert weights.classes is not None and any(c is not None for c in weights.classes)
    by_class = copy.copy(model)
    by_class.weights, by_class.calibration = weights, calibration
    history = panel.head(410)
    state = model.encode(history.values, history.dates[-1])
    kinds = state_classes(state)
    np.testing.assert_array_equal(kinds, demand_classes(history.values[:, -91:]))
    served = by_class.forecast(state, 7)
    expected = combine(model.lstm.forecast(state, 7),
                       model._lightgbm_forecast(model.lightgbm, state, 7),  # type: ignore[arg-type]
                       weights, integer=True, calibration=calibration, classes=kinds)
    batch = by_class.predict(history.values, 7, end_days=history.dates[-1])
    for field in ("daily", "cumulative", "mean"):
        np.testing.assert_array_equal(getattr(served, field), getattr(expected, field))
        np.testing.assert_array_equal(getattr(batch, field), getattr(expected, field))
    save_combination(by_class, tmp_path, data_fingerprint="test")
    loaded = load_model_dir(tmp_path, device="cpu", backend="torch")
    assert isinstance(loaded, LSTMLightGBMForecaster) and loaded.weights == weights
    again = loaded.predict(history.values, 7, end_days=history.dates[-1])
    for field in ("daily", "cumulative", "mean"):
        np.testing.assert_array_equal(getattr(again, field), getattr(batch, field))
    flag = make_forecaster("lstm_lgbm", device="cpu", horizon=7, class_weights=True)
    assert isinstance(flag, LSTMLightGBMForecaster) and flag.class_weights
    assert not make_forecaster("lstm_lgbm", device="cpu", horizon=7).class_weights  # type: ignore[attr-defined]


def test_shelfcast_train_writes_an_lstm_lgbm_directory_a_worker_loads(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from shelfcast import cli

    panel = _panel(n=6, days=150, seed=3)
    data = tmp_path / "d.csv"
    rows = [f"{sid},{panel.dates[t]},{int(panel.values[i, t])}"
            for i, sid in enumerate(panel.ids) for t in range(panel.n_days)
            if np.isfinite(panel.values[i, t])]
    data.write_text("unique_id,ds,y\n" + "\n".join(rows) + "\n")
    out = tmp_path / "model"
    code = cli.main(["train", "--data", str(data), "--out", str(out), "--horizon", "7",
                     "--hidden", "4", "--max-epochs", "1", "--device", "cpu", "--no-progress"])
    assert code == 0  # the default: the served model
    printed = json.loads(capsys.readouterr().out)
    assert printed["model"] == "lstm_lgbm"
    loaded = load_model_dir(out, device="cpu")
    assert loaded.model_version == printed["model_version"]
    assert (out / "lstm" / "model.pt").exists() and (out / "lightgbm" / "booster_0.txt").exists()


def test_planned_promotions_reach_the_lightgbm_part_through_the_inferencer(
        tmp_path: Path) -> None:
    """The served path of shop.promotions: keyed states in the inferencer, the SKUs'
    covariates merged across requests, the mix of LightGBM's promotion-aware forecast."""
    import asyncio

    from forecasting.covariates import Covariates
    from forecasting.inferencer import Inferencer

    rng = np.random.default_rng(3)
    n, days = 30, 420
    promo = (rng.random((n, days + 7)) < 0.15).astype(np.float64)
    level = rng.gamma(3.0, 3.0, (n, 1))
    values = rng.poisson(level * (1.0 + 3.0 * promo[:, :days])).astype(np.float64)
    panel = Panel(tuple(str(i) for i in range(n)), START, values,
                  Covariates(START, promo, np.ones_like(promo)))
    model = make_forecaster("lstm_lgbm", device="cpu", horizon=7, max_epochs=1, hidden=8,
                            head_hidden=8, val_days=21, promo_weights=True)
    assert isinstance(model, LSTMLightGBMForecaster)
    model.lightgbm_options = {"n_estimators": 30, "num_leaves": 7, "min_child_samples": 10}
    model.fit(panel)
    assert model.lightgbm is not None and model.lightgbm.covariates_used
    assert model.weights is not None and model.weights.promo is not None  # own weights
    save_combination(model, tmp_path, data_fingerprint="test")
    served = load_model_dir(tmp_path, device="cpu", backend="torch")
    assert isinstance(served, LSTMLightGBMForecaster)
    assert served.lightgbm is not None and served.lightgbm.covariates_used

    end = panel.dates[-1]
    none = Covariates.neutral(n, START, days + 7)
    planned_promo = none.promo.copy()
    planned_promo[:, days + 2] = 1.0  # forecast day 3
    planned = Covariates(START, planned_promo, none.price_ratio)
    keys = list(panel.ids)

    async def serve(cov: Covariates | None) -> QuantileForecast:
        async with Inferencer(served, max_batch=64, max_wait_ms=1.0) as inf:
            half = n // 2  # two requests in one batch: their covariates merged
            first = inf.serve_keyed(keys[:half], values[:half],
                                    7, end, covariates=None if cov is None
                                    else cov.subset(np.arange(half)))
            second = inf.serve_keyed(keys[half:], values[half:], 7, end,
                                     covariates=None if cov is None
                                     else cov.subset(np.arange(half, n)))
            a, b = await asyncio.gather(first, second)
        return QuantileForecast(a.forecast.levels,
                                np.concatenate([a.forecast.daily, b.forecast.daily]),
                                np.concatenate([a.forecast.cumulative, b.forecast.cumulative]),
                                np.concatenate([a.forecast.mean, b.forecast.mean]))

    plain, neutral, lifted = (asyncio.run(serve(c)) for c in (None, none, planned))
    np.testing.assert_array_equal(neutral.daily, plain.daily)
    # the stream serves what a backtest's call gives (promotion weights on day 3)
    batch = served.predict(values, 7, end_days=end, covariates=planned)
    for name in ("daily", "cumulative", "mean"):
        np.testing.assert_allclose(getattr(lifted, name), getattr(batch, name), atol=1e-6)
    assert lifted.mean[:, 2].sum() > 1.3 * plain.mean[:, 2].sum()
    others = np.r_[0:2, 3:7]
    np.testing.assert_array_equal(lifted.daily[:, others], plain.daily[:, others])
    np.testing.assert_array_equal(lifted.mean[:, others], plain.mean[:, others])

    # a calibration of the promotion days' own is saved, loaded and in the model id
    assert model.calibration is not None and model.promo_calibration is None
    before_id = model.model_id
    model.promo_calibration = dataclasses.replace(model.calibration, report={})
    save_combination(model, tmp_path / "split", data_fingerprint="test")
    split = load_model_dir(tmp_path / "split", device="cpu", backend="torch")
    assert isinstance(split, LSTMLightGBMForecaster)
    assert split.promo_calibration == model.promo_calibration
    assert split.model_id != before_id
    model.promo_calibration = None

    # an artifact saved before promotion weights existed serves one set for every day
    meta_path = tmp_path / "metadata.json"
    meta = json.loads(meta_path.read_text())
    del meta["weights"]["promo"]
    meta_path.write_text(json.dumps(meta))
    old = load_model_dir(tmp_path, device="cpu", backend="torch")
    assert isinstance(old, LSTMLightGBMForecaster) and old.weights is not None
    assert old.weights.promo is None
    served.weights = dataclasses.replace(served.weights, promo=None)  # type: ignore[arg-type]
    for cov in (None, planned):
        a = old.predict(values, 7, end_days=end, covariates=cov)
        b = served.predict(values, 7, end_days=end, covariates=cov)
        np.testing.assert_array_equal(a.daily, b.daily)
        np.testing.assert_array_equal(a.cumulative, b.cumulative)
