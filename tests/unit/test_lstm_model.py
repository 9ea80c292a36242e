"""LSTM forecaster: incremental == full recompute, the forecast contract, training, artifacts."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from forecasting import Forecaster, make_forecaster  # noqa: E402
from forecasting.data import Panel  # noqa: E402
from forecasting.lstm import (  # noqa: E402
    LSTMConfig,
    LSTMForecaster,
    LSTMNet,
    load_artifact,
    read_metadata,
    save_artifact,
    train_lstm,
)
from forecasting.lstm.features import (  # noqa: E402
    INPUT_DIM,
    YEAR_BASE_DAYS,
    DayRing,
    calendar_features,
    future_dim,
    future_features,
    head_inputs,
    holiday_flags,
    year_ago_dim,
    year_ago_features,
    year_ago_span,
)

torch.set_num_threads(1)
END = np.datetime64("2011-03-01")


def _model(horizon: int = 7, layers: int = 2, seed: int = 0) -> LSTMForecaster:
    torch.manual_seed(seed)
    cfg = LSTMConfig(horizon=horizon, hidden=16, layers=layers, head_hidden=16)
    return LSTMForecaster(LSTMNet(INPUT_DIM, cfg), device="cpu", end_day=lambda: END)


def _windows(rng: np.random.Generator, n: int = 12, length: int = 40) -> np.ndarray:
    w = rng.poisson(4.0, (n, length)).astype(float) * (rng.random((n, length)) < 0.6)
    w[:3, :15] = np.nan  # new SKUs: no history yet
    w[4, 20] = np.nan  # a missing bucket inside the history
    w[5] = np.nan  # no history at all
    w[6, :-1] = np.nan  # a single observation
    return w


def test_incremental_updates_equal_a_full_recompute() -> None:
    model = _model()
    w = _windows(np.random.default_rng(1))
    full = model.encode(w, END)
    split = 10  # before some series have started: their leading NaNs must be no-ops
    state = model.encode(w[:, :split], END - np.timedelta64(w.shape[1] - split, "D"))
    for t in range(split, w.shape[1]):
        state = model.update(state, w[:, t])
    assert state.last_day.tolist() == full.last_day.tolist()
    torch.testing.assert_close(state.h, full.h, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(state.c, full.c, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(state.scale.level, full.scale.level)
    a, b = model.forecast(state, 7), model.forecast(full, 7)
    np.testing.assert_allclose(a.daily, b.daily, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.cumulative, b.cumulative, rtol=1e-5, atol=1e-5)


def test_update_from_an_empty_state_equals_encoding_the_whole_window() -> None:
    model = _model(layers=1)
    w = _windows(np.random.default_rng(2), n=8, length=24)
    state = model.encode(np.full((8, 1), np.nan), END - np.timedelta64(24, "D"))
    for t in range(24):
        state = model.update(state, w[:, t])
    torch.testing.assert_close(state.h, model.encode(w, END).h, atol=1e-5, rtol=1e-5)


def test_update_leaves_the_previous_state_untouched() -> None:
    model = _model()
    w = _windows(np.random.default_rng(3))
    state = model.encode(w, END)
    h0 = state.h.clone()
    model.update(state, np.ones(w.shape[0]))
    torch.testing.assert_close(state.h, h0)


def test_forecast_contract_shapes_zeros_and_monotone_quantiles() -> None:
    model = _model()
    assert isinstance(model, Forecaster)
    w = _windows(np.random.default_rng(4))
    fc = model.predict(w, 10)  # longer than the trained horizon of 7
    assert fc.daily.shape == (12, 10, 9) and fc.mean.shape == (12, 10)
    assert np.all(fc.daily[5] == 0) and np.all(fc.cumulative[5] == 0)  # no history
    assert np.all(np.diff(fc.cumulative, axis=1) >= -1e-9)
    assert np.all(np.diff(fc.daily, axis=2) >= -1e-9)
    same = model.predict(w, 10, end_days=END)
    np.testing.assert_allclose(same.daily, fc.daily)
    assert model.predict(np.empty((0, 5)), 3).n_series == 0


def test_holidays_and_calendar() -> None:
    days = np.array(["2011-04-22", "2011-04-25", "2011-05-02", "2011-05-30", "2011-08-29",
                     "2010-12-25", "2011-01-03", "2011-04-21", "2011-06-01"], dtype="datetime64[D]")
    assert holiday_flags(days).tolist() == [1, 1, 1, 1, 1, 1, 1, 0, 0]
    assert holiday_flags(days, "none").sum() == 0
    cal = calendar_features(np.array(["2011-01-03"], dtype="datetime64[D]"))  # a Monday
    assert cal[0, 0] == 1 and cal[0, 7] == 1 and cal.sum() == 3


def test_future_features_say_which_forecast_days_are_in_a_later_month() -> None:
    origins = np.array(["2011-11-25", "2011-06-01"], dtype="datetime64[D]")
    f = future_features(origins, 7, "uk", head_calendar=True)
    assert f.shape == (2, future_dim(7, True)) == (2, 7 + 7 + 12)
    later = f[:, 7:14]
    assert later[0].tolist() == [0, 0, 0, 0, 0, 1, 1]  # Nov 26..30, then Dec 1, 2
    assert later[1].sum() == 0
    assert f[0, 14 + 11] == 1 and f[1, 14 + 5] == 1  # month of the last day: Dec, June
    assert future_features(origins, 7, "uk", head_calendar=False).shape == (2, 7)


def test_future_features_end_with_the_month_of_every_forecast_day() -> None:
    origins = np.array(["2011-11-25", "2011-12-28"], dtype="datetime64[D]")
    f = future_features(origins, 7, "uk", head_calendar=True, month="onehot")
    assert f.shape == (2, future_dim(7, True, month="onehot")) == (2, 7 + 7 + 12 + 7 * 12)
    months = f[:, 26:].reshape(2, 7, 12).argmax(axis=-1) + 1
    assert months.tolist() == [[11] * 5 + [12] * 2, [12] * 3 + [1] * 4]
    assert np.all(f[:, 26:].sum(axis=-1) == 7)
    four = future_features(origins, 7, "uk", head_calendar=False, month="fourier", pairs=3)
    assert four.shape == (2, 7 + 7 * 6)
    per_step = four[:, 7:].reshape(2, 7, 6)
    np.testing.assert_allclose(per_step[..., :3] ** 2 + per_step[..., 3:] ** 2, 1.0)
    # 1 Jan (step 4 of the second origin): day of the year 0, sin 0, cos 1.
    np.testing.assert_allclose(per_step[1, 3], [0, 0, 0, 1, 1, 1], atol=1e-12)
    with pytest.raises(ValueError, match="month mode"):
        future_dim(7, True, month="weekly")


def test_the_target_month_is_not_masked_by_the_year_ago_level() -> None:
    span = np.full((2, year_ago_span(7, 2)), 5.0)
    span[1] = np.nan  # no year-ago level
    out = head_inputs(np.datetime64("2011-11-27"), np.array([5.0, 5.0]), span, horizon=7,
                      calendar="uk", head_calendar=True, annual=False, mask_calendar=True,
                      weeks=2, month="onehot")
    months = slice(26, 26 + 7 * 12)
    assert out[0, -1] == 1 and out[1, -1] == 0
    np.testing.assert_array_equal(out[0, months], out[1, months])
    assert out[0, months].sum() == 7 and out[0, 7:26].sum() == 0  # head calendar masked


def test_artifacts_from_before_the_head_calendar_load_without_it() -> None:
    cfg = LSTMConfig(horizon=7).to_json()
    del cfg["head_calendar"]
    assert LSTMConfig.from_json(cfg).head_calendar is False
    assert LSTMConfig.from_json(LSTMConfig(horizon=7).to_json()).head_calendar is True


def _panel(n: int = 16, days: int = 140, seed: int = 0) -> Panel:
    rng = np.random.default_rng(seed)
    weekly = np.array([1.0, 1.2, 1.1, 1.0, 1.6, 0.3, 0.5])
    level = rng.gamma(2.0, 3.0, (n, 1))
    rate = level * np.tile(weekly, days // 7 + 1)[None, :days]
    values = rng.poisson(rate).astype(float)
    values[:2, :30] = np.nan
    return Panel(tuple(f"s{i}" for i in range(n)), np.datetime64("2011-01-03"), values)


TINY = LSTMConfig(horizon=7, hidden=8, head_hidden=8, max_epochs=3, val_days=14,
                  batch_series=8, max_train_days=None)


def test_training_is_deterministic_and_learns() -> None:
    panel = _panel()
    a = train_lstm(panel, TINY, device="cpu")
    b = train_lstm(panel, TINY, device="cpu")
    for pa, pb in zip(a.forecaster.net.parameters(), b.forecaster.net.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)
    losses = [h["val_loss"] for h in a.history]
    assert losses[-1] < losses[0]
    fc = a.forecaster.predict(panel.values, 7, end_days=panel.dates[-1])
    assert np.all(np.isfinite(fc.daily))


def test_fit_through_the_registry() -> None:
    model = make_forecaster("lstm", horizon=7, hidden=8, head_hidden=8, max_epochs=1,
                            val_days=14, max_train_days=None, device="cpu")
    assert isinstance(model, LSTMForecaster)
    panel = _panel(n=6, days=70)
    assert model.fits and model.needs_fit
    model.fit(panel)
    assert not model.needs_fit and model.fit_metrics["epochs"] == 1.0
    assert model.predict(panel.values, 7, end_days=panel.dates[-1]).n_series == 6


def test_artifact_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    panel = _panel()
    result = train_lstm(panel, TINY, device="cpu")
    info = save_artifact(result.forecaster, tmp_path / "m", data_fingerprint=panel.fingerprint(),
                         metrics=result.metrics, history=result.history)
    loaded = load_artifact(tmp_path / "m", device="cpu")
    assert loaded.model_version == f"lstm-1+{info.model_id}"
    assert result.forecaster.model_version == loaded.model_version
    a = result.forecaster.predict(panel.values, 7, end_days=panel.dates[-1])
    b = loaded.predict(panel.values, 7, end_days=panel.dates[-1])
    np.testing.assert_array_equal(a.daily, b.daily)
    np.testing.assert_array_equal(a.cumulative, b.cumulative)
    meta = read_metadata(tmp_path / "m")
    assert meta["data_fingerprint"] == panel.fingerprint()
    assert meta["horizon"] == 7 and len(meta["features"]["inputs"]) == INPUT_DIM
    assert meta["scaling"]["log_scale_std"] == pytest.approx(result.forecaster.log_scale_std)
    assert "best_val_loss" in meta["metrics"]
    json.dumps(meta)
    # Same weights, same id: the version is content-derived.
    again = save_artifact(loaded, tmp_path / "m2", data_fingerprint="x")
    assert again.model_id == info.model_id


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize(("year_ago", "month"), [(False, "none"), (True, "none"),
                                                 (False, "onehot"), (True, "onehot"),
                                                 (True, "fourier")])
def test_packed_step_and_head_equal_the_network(monkeypatch: pytest.MonkeyPatch, layers: int,
                                                integer: bool, year_ago: bool,
                                                month: str) -> None:
    from forecasting.lstm import kernels

    monkeypatch.setattr(kernels, "_CHUNK_ROWS", 5)  # several row blocks, one partial
    torch.manual_seed(layers)
    # year_ago=True is the default head: year-ago inputs, the calendar mask and the prior.
    cfg = LSTMConfig(horizon=7, hidden=16, layers=layers, head_hidden=16,
                     integer_demand=integer, year_ago=year_ago, year_ago_prior=year_ago,
                     head_month=month)
    model = LSTMForecaster(LSTMNet(INPUT_DIM, cfg), device="cpu", end_day=lambda: END)
    with torch.no_grad():  # gates away from 1/2, so a wrong gate row would show
        model.net.head[-1].bias.add_(torch.randn(model.net.head[-1].bias.shape))
    w = _long_windows(np.random.default_rng(5), n=12) * 3.0
    w[6:9, :-100] = np.nan  # less than a year of history: no year-ago level
    w[9] = np.nan  # no history at all
    ends = END - (np.arange(12) % 3).astype("timedelta64[D]")  # three distinct origins
    state = model.encode(w, ends)
    stepped = model.update(state, w[:, -1])
    packed = kernels.PackedNet.of(model.net)
    assert packed.head_packed and packed.step_packed and packed.prior == year_ago
    x = torch.randn(12, 1, INPUT_DIM)
    with torch.inference_mode():
        _, (h_ref, c_ref) = model.net.encode(x, (state.h, state.c))
        h, c = packed.step(x[:, 0], state.h, state.c)
    torch.testing.assert_close(h, h_ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(c, c_ref, atol=1e-6, rtol=1e-5)
    fc = model.forecast(stepped, 7)
    scale = torch.as_tensor(np.where(stepped.scale.count > 0,
                                     np.maximum(stepped.scale.level, 0.01), 0.0),
                            dtype=torch.float32)
    ref = model._forecast_unpacked(stepped, scale)
    q = len(cfg.levels)
    np.testing.assert_allclose(fc.daily, ref[..., :q], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fc.cumulative, ref[..., q : 2 * q], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fc.mean, ref[..., 2 * q], rtol=1e-5, atol=1e-5)
    assert fc.daily.dtype == np.float64 and np.all(fc.daily[9] == 0)  # no history: zeros
    if year_ago:  # both kinds of series are in the batch
        assert stepped.ring is not None
        known = year_ago_features(stepped.ring.span(year_ago_span(7)), np.ones(12),
                                  stepped.last_day, 7)[:, -1]
        assert known[:6].all() and known[10:].all() and not known[6:10].any()


def test_a_head_the_packing_does_not_match_falls_back_to_the_network() -> None:
    from forecasting.lstm.kernels import PackedNet

    class Doubled(LSTMNet):  # a head_raw the packed layout knows nothing about
        def head_raw(self, top: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
            return super().head_raw(top, future) * 2.0

    torch.manual_seed(3)
    net = Doubled(INPUT_DIM, LSTMConfig(horizon=7, hidden=16, head_hidden=16)).eval()
    assert not PackedNet.of(net).head_packed  # caught by the probe, not by the flags
    model = LSTMForecaster(net, device="cpu", end_day=lambda: END)
    w = _long_windows(np.random.default_rng(8))
    state = model.encode(w, END)
    reference = LSTMForecaster(LSTMNet(INPUT_DIM, net.config), device="cpu",
                               end_day=lambda: END)
    reference.net.load_state_dict(net.state_dict())
    assert PackedNet.of(reference.net).head_packed
    assert not np.allclose(model.forecast(state, 7).mean, reference.forecast(state, 7).mean)


def test_packed_weights_follow_the_network() -> None:
    from forecasting.lstm.kernels import PackedNet

    model = _model(layers=1)
    first = PackedNet.of(model.net)
    assert PackedNet.of(model.net, first) is first
    with torch.no_grad():
        model.net.head[-1].bias.add_(1.0)  # new weights (e.g. training in place): re-packed
    assert PackedNet.of(model.net, first) is not first
    normal = _model(layers=1)
    normal.net = LSTMNet(INPUT_DIM, LSTMConfig(horizon=7, hidden=16, head_hidden=16,
                                               loss="normal")).eval()
    assert not PackedNet.of(normal.net).head_packed
    fc = normal.predict(_windows(np.random.default_rng(6)), 7)  # LSTMNet's own head
    assert fc.daily.shape == (12, 7, 9)


@pytest.mark.parametrize("layers", [1, 2])
def test_encoding_with_the_packed_step_equals_the_torch_lstm(
        monkeypatch: pytest.MonkeyPatch, layers: int) -> None:
    from forecasting.lstm import forecaster, kernels

    model = _model(layers=layers)
    w = _windows(np.random.default_rng(7))  # late starts, a gap, an empty and a 1-day row
    ends = END - (np.arange(12) % 2).astype("timedelta64[D]")
    monkeypatch.setattr(forecaster, "_LOOP_MIN_ROWS", 10**9)
    ref = model.encode(w, ends)
    monkeypatch.setattr(forecaster, "_LOOP_MIN_ROWS", 1)
    monkeypatch.setattr(kernels, "_CHUNK_ROWS", 5)
    got = model.encode(w, ends)
    torch.testing.assert_close(got.h, ref.h, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.c, ref.c, atol=1e-5, rtol=1e-5)
    assert torch.all(got.h[:, 5] == 0)  # no history: zero state


@pytest.mark.parametrize("warmup_days", [None, 3, 12, 100])
def test_days_before_every_series_first_observation_are_skipped_with_the_same_state(
        monkeypatch: pytest.MonkeyPatch, warmup_days: int | None) -> None:
    from forecasting.lstm import serving  # builds both backends' encode inputs

    model = _model(layers=2, seed=4)
    rng = np.random.default_rng(8)
    young = rng.poisson(3.0, (5, 16)).astype(float)  # a stream's young SKUs: 16 days seen...
    young[1, :4] = np.nan  # ...one of them from its 5th day on
    young[2, 6] = 0.0
    window = np.concatenate([np.full((5, 40), np.nan), young], axis=1)  # ...in a 56-day window
    lengths: list[int] = []
    features = serving.input_features

    def recording(arr, *args):  # type: ignore[no-untyped-def]
        lengths.append(arr.shape[1])
        return features(arr, *args)

    monkeypatch.setattr(serving, "input_features", recording)
    got = model.encode(window, END, warmup_days=warmup_days)
    assert lengths == [min(16, warmup_days or 16)]  # the 40 unseen days never reach the LSTM
    ref = model.encode(young, END, warmup_days=warmup_days)
    assert torch.equal(got.h, ref.h) and torch.equal(got.c, ref.c)
    np.testing.assert_array_equal(got.scale.level, ref.scale.level)
    np.testing.assert_array_equal(got.scale.count, ref.scale.count)
    assert got.ring is not None and ref.ring is not None
    np.testing.assert_array_equal(got.ring.own_values(), ref.ring.own_values())
    fc, fc_ref = model.forecast(got, 7), model.forecast(ref, 7)
    np.testing.assert_array_equal(fc.daily, fc_ref.daily)


def test_an_empty_batch_encodes_steps_and_forecasts() -> None:
    model = _model()
    state = model.update(model.encode(np.empty((0, 5)), END), np.empty(0))
    assert state.h.shape == (2, 0, 16) and model.forecast(state, 7).daily.shape == (0, 7, 9)

def _long_windows(rng: np.random.Generator, n: int = 6, length: int = 430) -> np.ndarray:
    days = np.arange(length)
    rate = 5.0 + 3.0 * np.sin(2 * np.pi * days / 365.25)[None, :] + rng.gamma(2.0, 1.0, (n, 1))
    w = rng.poisson(rate).astype(float)
    w[0, :50] = np.nan  # started late: its ring is part NaN, part demand
    w[1, 300] = np.nan  # a missing bucket a year before the forecast weeks
    return w


def _year_ago_model(month: str = "none") -> LSTMForecaster:
    torch.manual_seed(0)
    cfg = LSTMConfig(horizon=7, hidden=8, head_hidden=8, head_month=month)
    assert cfg.year_ago and cfg.year_ago_prior  # the defaults this test is about
    return LSTMForecaster(LSTMNet(INPUT_DIM, cfg), device="cpu", end_day=lambda: END)


@pytest.mark.parametrize(("consume", "month"), [(False, "none"), (True, "none"),
                                               (True, "onehot")])  # ring copied / in place
@pytest.mark.parametrize("split", [30, 400])  # ring not yet / already full before updates
def test_incremental_equals_full_with_year_ago_inputs(split: int, consume: bool,
                                                      month: str) -> None:
    model = _year_ago_model(month)
    w = _long_windows(np.random.default_rng(5))
    full = model.encode(w, END)
    state = model.encode(w[:, :split], END - np.timedelta64(w.shape[1] - split, "D"))
    for t in range(split, w.shape[1]):
        state = model.update(state, w[:, t], consume=consume)
    assert state.ring is not None and full.ring is not None
    span = year_ago_span(7)
    np.testing.assert_array_equal(state.ring.span(span), full.ring.span(span))
    a, b = model.forecast(state, 7), model.forecast(full, 7)
    np.testing.assert_allclose(a.daily, b.daily, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-5, atol=1e-5)
    # The year-ago inputs are live (not all zeros) and change the forecast.
    feats = year_ago_features(full.ring.span(span), np.maximum(full.scale.level, 0.01), END, 7)
    assert np.all(feats[:, -1] == 1) and np.all(feats[:, :7] > 0)
    older = model.forecast(model.encode(w[:, -200:], END), 7)  # no year-ago history
    assert not np.allclose(older.mean, b.mean)


def test_year_ago_features_read_the_same_weekdays_and_month_a_year_earlier() -> None:
    horizon = 3
    span = np.arange(year_ago_span(horizon), dtype=float)  # days origin-391 .. origin-364+10
    base = np.mean(np.arange(YEAR_BASE_DAYS))  # the 28 days up to origin - 364
    # Mid-June: day origin + h - 364 sits at index 27 + h; the days 7 before and after are
    # in June too, so step h averages 27 + h - 7, 27 + h, 27 + h + 7.
    f = year_ago_features(span, np.array(4.0), np.datetime64("2011-06-10"), horizon)
    assert f.shape == (year_ago_dim(horizon),)
    week = 27.0 + np.arange(1, horizon + 1)
    np.testing.assert_allclose(f[:3], week / 4.0)
    assert f[3] == pytest.approx(base / 4.0)  # year-ago level over today's scale
    np.testing.assert_allclose(f[4:7], week / base)
    assert f[7] == 1.0
    # Origin 28 June 2011: 29 June's year-ago day (-364) is 30 June 2010, +7 is in July: 21
    # and 28; 30 June's is 1 July 2010: only 24 June (22) is in June; 1 July 2011's is
    # 2 July 2010, with 9 July (30 and 37), 25 June is not.
    end_june = year_ago_features(span, np.array(4.0), np.datetime64("2011-06-28"), horizon)
    np.testing.assert_allclose(end_june[:3], np.array([24.5, 22.0, 33.5]) / 4.0)
    span[28] = np.nan  # a missing day is left out
    assert year_ago_features(span, np.array(4.0), np.datetime64("2011-06-28"),
                             horizon)[0] == 21.0 / 4.0
    span[:YEAR_BASE_DAYS] = np.nan  # no year-ago level: the shape and the flag are 0
    g = year_ago_features(span, np.array(4.0), np.datetime64("2011-06-10"), horizon)
    assert np.all(g[4:] == 0) and g[3] == 0


def test_more_year_ago_weeks_average_more_same_weekdays_in_the_month() -> None:
    horizon, weeks = 3, 2
    span = np.arange(year_ago_span(horizon, weeks), dtype=float)
    # Origin 13 June 2011: step h's year-ago day (15, 16, 17 June 2010) sits at index
    # 27 + h; for steps 1 and 2 all of -14, -7, 0, +7, +14 days are in June 2010 (their
    # mean is the day itself), step 3's +14 is 1 July.
    f = year_ago_features(span, np.array(4.0), np.datetime64("2011-06-13"), horizon, weeks)
    np.testing.assert_allclose(f[:2], np.array([28.0, 29.0]) / 4.0)
    assert f[2] == pytest.approx(np.mean([16.0, 23.0, 30.0, 37.0]) / 4.0)
    # Origin 28 June 2011, step 1 (29 June): year-ago day 30 June 2010 (index 28) and
    # 16, 23 June (14, 21) are in June; 7 and 14 July are not.
    end = year_ago_features(span, np.array(4.0), np.datetime64("2011-06-28"), horizon, weeks)
    assert end[0] == pytest.approx(np.mean([14.0, 21.0, 28.0]) / 4.0)
    with pytest.raises(ValueError, match="too long"):
        year_ago_span(14, 60)


@pytest.mark.parametrize(("weeks", "month"), [(1, "none"), (2, "none"), (2, "onehot"),
                                              (2, "fourier")])
def test_training_sees_the_head_inputs_the_forecaster_computes(weeks: int, month: str) -> None:
    from forecasting.lstm.training import _head_inputs

    cfg = LSTMConfig(horizon=7, year_ago_weeks=weeks, head_month=month)
    w = _long_windows(np.random.default_rng(6), n=4, length=420)
    days = END - np.arange(w.shape[1])[::-1].astype("timedelta64[D]")
    scales = np.full(w.shape, 3.0)
    train = _head_inputs(w, scales, days, cfg)
    assert cfg.year_ago_masks_calendar and not cfg.head_annual
    for t in (10, 395, 419):
        ring = DayRing.from_windows(w[:, : t + 1])
        at = head_inputs(days[t], scales[:, t], ring.span(year_ago_span(7, weeks)), horizon=7,
                         calendar="uk", head_calendar=True, annual=False, mask_calendar=True,
                         weeks=weeks, month=month)
        np.testing.assert_allclose(train[:, t], at)
    # The month part of the head calendar (later-month flags, month of the last step) is
    # there without a year-ago level (t = 10) and zeroed with one (t = 419).
    months = slice(7, 7 + 7 + 12)
    assert np.all(train[:, 10, months].sum(axis=-1) >= 1)
    assert np.all(train[:, 419, -1] == 1) and np.all(train[:, 419, months] == 0)


def test_artifacts_from_before_the_year_ago_inputs_load_without_them() -> None:
    cfg = LSTMConfig(horizon=7).to_json()
    del cfg["year_ago"], cfg["year_ago_prior"], cfg["year_ago_masks_calendar"]
    del cfg["year_ago_weeks"], cfg["head_month"], cfg["head_month_pairs"]
    old = LSTMConfig.from_json(cfg)
    assert not (old.year_ago or old.year_ago_prior or old.year_ago_masks_calendar)
    assert old.year_ago_weeks == 1
    assert old.head_month == "none"
    net = LSTMNet(INPUT_DIM, old)
    assert net.head[0].in_features == 64 + future_dim(7, True)


def test_the_year_ago_shape_multiplies_daily_quantiles_and_mean_through_a_gate() -> None:
    cfg = LSTMConfig(horizon=3, hidden=4, head_hidden=4)
    net = LSTMNet(INPUT_DIM, cfg).eval()
    last = net.head[-1]
    q = len(cfg.levels)
    with torch.no_grad():
        last.weight.zero_()
        bias = last.bias.view(3, net.per_step)
        bias.zero_()
        bias[:, -1] = 30.0  # gate sigmoid(30) = 1: trust the year-ago shape fully
    future = torch.zeros(2, net.head[0].in_features - cfg.hidden)
    future[:, -4:-1] = torch.tensor([0.5, 1.0, 2.0])  # the shape of steps 1..3
    future[0, -1] = 1.0  # series 0 has a year-ago level, series 1 not
    daily, _, mean = net.quantiles(net.head_raw(torch.zeros(2, cfg.hidden), future))
    base = float(torch.nn.functional.softplus(torch.tensor(0.0)))
    torch.testing.assert_close(mean[0], base * torch.tensor([0.5, 1.0, 2.0]))
    torch.testing.assert_close(mean[1], torch.full((3,), base))
    torch.testing.assert_close(daily[0, :, -1], daily[1, :, -1] * torch.tensor([0.5, 1.0, 2.0]))
    assert q == daily.shape[-1]


def test_without_month_inputs_months_stay_zero_and_updates_equal_a_full_recompute() -> None:
    days = np.array(["2011-01-31", "2011-06-15"], dtype="datetime64[D]")
    with_months = calendar_features(days)
    without = calendar_features(days, months=False)
    assert with_months[:, 7:19].sum() == 2 and without[:, 7:19].sum() == 0
    np.testing.assert_array_equal(without[:, :7], with_months[:, :7])
    fut = future_features(days, 7, "uk", head_calendar=True, months=False)
    assert fut[:, 14:26].sum() == 0 and fut[0, 7:14].sum() > 0  # later-month flags stay
    torch.manual_seed(0)
    cfg = LSTMConfig(horizon=7, hidden=16, head_hidden=16, month_inputs=False)
    model = LSTMForecaster(LSTMNet(INPUT_DIM, cfg), device="cpu", end_day=lambda: END)
    w = _windows(np.random.default_rng(3), length=60)
    full = model.encode(w, END)
    state = model.encode(w[:, :30], END - np.timedelta64(30, "D"))
    for t in range(30, 60):
        state = model.update(state, w[:, t])
    torch.testing.assert_close(state.h, full.h, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(model.forecast(state, 7).daily, model.forecast(full, 7).daily,
                               rtol=1e-5, atol=1e-5)
    trained = _model(layers=1)  # the same weights with months: a different forecast
    trained.net.load_state_dict(model.net.state_dict())
    assert not np.allclose(trained.forecast(trained.encode(w, END), 7).mean,
                           model.forecast(full, 7).mean)
