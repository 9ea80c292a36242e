"""Interval calibration: nominal closed coverage for counts, a no-op when already calibrated,
monotone quantiles, carried through training, artifacts and the incremental path."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
stats = pytest.importorskip("scipy.stats")

from forecasting.base import QUANTILE_LEVELS  # noqa: E402
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
from forecasting.lstm.calibration import (  # noqa: E402
    IntervalCalibration,
    fit_levels,
    interp_weights,
)
from forecasting.lstm.features import INPUT_DIM  # noqa: E402
from forecasting.lstm.kernels import PackedNet  # noqa: E402
from forecasting.metrics import coverage  # noqa: E402

torch.set_num_threads(1)
LEVELS = np.asarray(QUANTILE_LEVELS)
END = np.datetime64("2011-03-01")


def _closed(q: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    i, j = int(np.argmin(np.abs(LEVELS - lo))), int(np.argmin(np.abs(LEVELS - hi)))
    return float(coverage(y, q[..., i], q[..., j]))


def _apply(cal: IntervalCalibration, daily: np.ndarray, *, integer: bool) -> np.ndarray:
    """Calibrated daily quantiles of (m, Q) rows, through the (n, H, 2Q + 1) block."""
    q = LEVELS.size
    block = np.concatenate([daily, daily, np.zeros((daily.shape[0], 1))], axis=1)[:, None]
    cal.apply(block, integer=integer)
    out: np.ndarray = block[:, 0, :q]
    return out


def _intermittent(rng: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero-inflated negative-binomial days (about half zeros) and their exact quantiles:
    the pinball-optimal forecast of a count, which over-covers closed intervals."""
    mean = rng.gamma(1.0, 1.5, m)
    p_zero = rng.uniform(0.2, 0.6, m)
    n_shape = 1.5
    p = n_shape / (n_shape + mean)
    y = np.where(rng.random(m) < p_zero, 0.0, rng.negative_binomial(n_shape, p))
    # quantile of the mixture: P(Y <= k) = p_zero + (1 - p_zero) F_nb(k)
    tau = np.clip((LEVELS[None, :] - p_zero[:, None]) / (1 - p_zero[:, None]), 0.0, 1.0)
    q = stats.nbinom.ppf(tau, n_shape, p[:, None])
    return np.where(tau <= 0, 0.0, q), y


def test_counts_whose_quantiles_over_cover_get_nominal_closed_coverage() -> None:
    rng = np.random.default_rng(0)
    q_val, y_val = _intermittent(rng, 40_000)
    q_test, y_test = _intermittent(rng, 40_000)
    assert (y_test == 0).mean() > 0.4
    raw80, raw95 = _closed(q_test, y_test, 0.1, 0.9), _closed(q_test, y_test, 0.025, 0.975)
    assert raw80 > 0.86 and raw95 > 0.97  # the problem: exact count quantiles over-cover
    source, report = fit_levels(q_val, y_val, QUANTILE_LEVELS, integer=True)
    cal = IntervalCalibration(QUANTILE_LEVELS, tuple(source))
    fixed = _apply(cal, q_test, integer=True)
    assert _closed(fixed, y_test, 0.1, 0.9) == pytest.approx(0.80, abs=0.02)
    assert _closed(fixed, y_test, 0.025, 0.975) == pytest.approx(0.95, abs=0.015)
    assert report["80_before"] == pytest.approx(raw80, abs=0.01)
    assert report["80_after"] == pytest.approx(0.80, abs=0.015)
    assert np.all(fixed == np.round(fixed)) and np.all(np.diff(fixed, axis=1) >= 0)


def test_a_calibrated_continuous_forecast_is_left_about_as_it_was() -> None:
    rng = np.random.default_rng(1)
    mu, sigma = rng.uniform(50, 200, 30_000), rng.uniform(5, 30, 30_000)
    y = rng.normal(mu, sigma)
    q = mu[:, None] + sigma[:, None] * stats.norm.ppf(LEVELS)[None, :]
    source, report = fit_levels(q, y, QUANTILE_LEVELS, integer=False)
    np.testing.assert_allclose(source, LEVELS, atol=0.006)
    assert report["80_after"] == pytest.approx(0.80, abs=0.01)
    assert report["95_after"] == pytest.approx(0.95, abs=0.01)


def test_a_too_narrow_continuous_forecast_is_widened() -> None:
    rng = np.random.default_rng(2)
    mu = rng.uniform(50, 200, 30_000)
    y = rng.normal(mu, 20.0)
    q = mu[:, None] + 12.0 * stats.norm.ppf(LEVELS)[None, :]  # 60% of the true spread
    source, report = fit_levels(q, y, QUANTILE_LEVELS, integer=False)
    assert report["80_before"] < 0.70
    assert report["80_after"] == pytest.approx(0.80, abs=0.01)
    assert source[2] < 0.1 < 0.9 < source[-3]


def test_interp_weights_give_the_curve_between_and_past_the_levels() -> None:
    q = np.array([[0.0, 1.0, 2.0, 4.0, 8.0, 10.0, 12.0, 14.0, 16.0]])
    np.testing.assert_allclose(q @ interp_weights(QUANTILE_LEVELS, QUANTILE_LEVELS), q)
    mid = q @ interp_weights(QUANTILE_LEVELS, [0.375, 0.9625, 0.99])
    np.testing.assert_allclose(mid, [[6.0, 15.0, 16.0 + 2.0 * 0.015 / 0.025]])


def test_calibrated_blocks_stay_monotone_over_levels_and_steps() -> None:
    rng = np.random.default_rng(3)
    q = LEVELS.size
    inc = rng.gamma(0.5, 2.0, (50, 7, 2, q))
    quant = np.cumsum(inc, axis=-1) - 1.0  # some below 0 before clipping
    quant[:, :, 1] = np.maximum.accumulate(quant[:, :, 1] + np.arange(7)[None, :, None], axis=1)
    block = np.concatenate([quant.reshape(50, 7, 2 * q), rng.random((50, 7, 1))], axis=2)
    cal = IntervalCalibration(QUANTILE_LEVELS,
                              (0.001, 0.06, 0.2, 0.3, 0.45, 0.7, 0.85, 0.99, 0.999),
                              (0.02, 0.04, 0.08, 0.2, 0.5, 0.8, 0.92, 0.96, 0.999))
    for integer in (False, True):
        out = block.copy()
        cal.apply(out, integer=integer)
        daily, cum = out[..., :q], out[..., q : 2 * q]
        assert np.all(daily >= 0) and np.all(np.diff(daily, axis=-1) >= 0)
        assert np.all(np.diff(cum, axis=-1) >= 0) and np.all(np.diff(cum, axis=1) >= 0)
        assert np.all(cum[:, 0] >= daily[:, 0])
        np.testing.assert_array_equal(out[..., -1], block[..., -1])  # the mean is left alone
    with pytest.raises(ValueError, match="non-decreasing"):
        IntervalCalibration(QUANTILE_LEVELS, (0.5,) * 8 + (0.4,))


def _panel(n: int = 24, days: int = 150, seed: int = 0) -> Panel:
    rng = np.random.default_rng(seed)
    level = rng.gamma(1.0, 1.0, (n, 1))
    values = rng.poisson(level * np.ones((1, days))) * (rng.random((n, days)) < 0.5)
    values = values.astype(float)
    values[:2, :30] = np.nan
    return Panel(tuple(f"s{i}" for i in range(n)), np.datetime64("2011-01-03"), values)


TINY = LSTMConfig(horizon=7, hidden=8, head_hidden=8, max_epochs=2, val_days=14,
                  batch_series=8, max_train_days=None)


def test_training_learns_a_calibration_that_artifacts_keep(tmp_path) -> None:  # type: ignore[no-untyped-def]
    panel = _panel()
    result = train_lstm(panel, TINY, device="cpu")
    model = result.forecaster
    assert model.calibration is not None and model.calibration.cumulative is not None
    assert "val_daily_coverage_80_after" in result.metrics
    assert "val_cumulative_coverage_80_before" in result.metrics
    save_artifact(model, tmp_path / "m", data_fingerprint="x", metrics=result.metrics)
    loaded = load_artifact(tmp_path / "m", device="cpu")
    assert loaded.calibration == model.calibration
    assert read_metadata(tmp_path / "m")["calibration"]["daily"] == list(
        model.calibration.daily or ())
    a = model.predict(panel.values, 7, end_days=panel.dates[-1])
    b = loaded.predict(panel.values, 7, end_days=panel.dates[-1])
    np.testing.assert_array_equal(a.daily, b.daily)
    np.testing.assert_array_equal(a.cumulative, b.cumulative)
    raw = train_lstm(panel, dataclasses.replace(TINY, calibrate=False), device="cpu")
    assert raw.forecaster.calibration is None
    for pa, pb in zip(raw.forecaster.net.parameters(), model.net.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)  # the calibration does not touch training


def test_artifacts_without_a_calibration_load_and_forecast_as_before(tmp_path) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    cfg = LSTMConfig(horizon=7, hidden=8, head_hidden=8, integer_demand=True)
    model = LSTMForecaster(LSTMNet(INPUT_DIM, cfg), device="cpu")
    before = save_artifact(model, tmp_path / "m", data_fingerprint="x")
    meta_path = tmp_path / "m" / "metadata.json"
    meta = read_metadata(tmp_path / "m")
    del meta["calibration"]  # what older code wrote
    meta_path.write_text(json.dumps(meta))
    loaded = load_artifact(tmp_path / "m", device="cpu")
    assert loaded.calibration is None and loaded.model_id == before.model_id
    w = _panel(n=6, days=60).values * 3.0
    a, b = model.predict(w, 7, end_days=END), loaded.predict(w, 7, end_days=END)
    np.testing.assert_array_equal(a.daily, b.daily)
    state = loaded.encode(w, END)
    np.testing.assert_array_equal(loaded.head_output(state, integer=True)[..., :9], a.daily)


class _Doubled(LSTMNet):  # a head the packed layout does not match: the unpacked path
    def head_raw(self, top: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        return super().head_raw(top, future) * 2.0


@pytest.mark.parametrize("packed", [True, False])
def test_incremental_equals_full_with_a_calibration(packed: bool) -> None:
    torch.manual_seed(1)
    cfg = LSTMConfig(horizon=7, hidden=16, head_hidden=16)
    cal = IntervalCalibration(QUANTILE_LEVELS,
                              (0.05, 0.07, 0.15, 0.3, 0.5, 0.7, 0.85, 0.93, 0.96),
                              (0.02, 0.04, 0.09, 0.24, 0.5, 0.76, 0.91, 0.96, 0.98))
    net = (LSTMNet if packed else _Doubled)(INPUT_DIM, cfg).eval()
    model = LSTMForecaster(net, device="cpu", calibration=cal)
    assert PackedNet.of(net).head_packed == packed
    plain = LSTMForecaster(model.net, device="cpu")
    w = _panel(n=10, days=50, seed=4).values * 4.0
    split = 35
    state = model.encode(w[:, :split], END - np.timedelta64(w.shape[1] - split, "D"))
    for t in range(split, w.shape[1]):
        state = model.update(state, w[:, t])
    a, b = model.forecast(state, 7), model.forecast(model.encode(w, END), 7)
    np.testing.assert_allclose(a.daily, b.daily, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.cumulative, b.cumulative, rtol=1e-5, atol=1e-5)
    raw = plain.forecast(model.encode(w, END), 7)
    assert np.any(a.daily != raw.daily)  # the calibration moved something
    assert np.all(np.diff(a.daily, axis=-1) >= 0)
