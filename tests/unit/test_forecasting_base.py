"""QuantileForecast validation, lead-time quantiles and the Forecaster contract."""

from __future__ import annotations

import math

import numpy as np
import pytest

from forecasting import (
    QUANTILE_LEVELS,
    Forecaster,
    InvalidForecastError,
    InvalidWindowError,
    MovingAverage,
    QuantileForecast,
    SeasonalNaive,
    UnknownForecasterError,
    available_forecasters,
    make_forecaster,
    register_forecaster,
)
from forecasting.data import Panel

LEVELS = np.array([0.1, 0.5, 0.9])


def _forecast() -> QuantileForecast:
    # Two series, horizon 2; cumulative of series 0: step 1 -> (1, 2, 4), step 2 -> (3, 4, 8).
    daily = np.array([[[1, 2, 4], [2, 2, 4]], [[0, 0, 1], [0, 1, 2]]], dtype=float)
    cumulative = np.array([[[1, 2, 4], [3, 4, 8]], [[0, 0, 1], [0, 1, 3]]], dtype=float)
    mean = np.array([[2.0, 2.0], [0.5, 1.0]])
    return QuantileForecast(LEVELS, daily, cumulative, mean)


def test_default_levels_are_sorted_and_symmetric() -> None:
    levels = np.array(QUANTILE_LEVELS)
    assert np.all(np.diff(levels) > 0)
    np.testing.assert_allclose(levels + levels[::-1], 1.0)


def test_forecast_is_read_only_and_knows_its_shape() -> None:
    fc = _forecast()
    assert (fc.n_series, fc.horizon) == (2, 2)
    with pytest.raises(ValueError):
        fc.daily[0, 0, 0] = 5.0


@pytest.mark.parametrize(
    "change",
    [
        {"daily": np.zeros((2, 2, 2))},  # wrong Q
        {"cumulative": np.zeros((2, 3, 3))},  # shape differs from daily
        {"mean": np.zeros((2, 3))},
        {"daily": np.array([[[3, 2, 4]] * 2] * 2, dtype=float)},  # decreasing along Q
        {"cumulative": np.full((2, 2, 3), -1.0)},  # negative demand
        {"mean": np.full((2, 2), np.nan)},
        {"levels": np.array([0.5, 0.1, 0.9])},
        {"levels": np.array([0.0, 0.5, 1.0])},
    ],
)
def test_invalid_forecasts_are_rejected(change: dict[str, np.ndarray]) -> None:
    fc = _forecast()
    fields = {"levels": LEVELS, "daily": fc.daily, "cumulative": fc.cumulative, "mean": fc.mean}
    fields.update(change)
    with pytest.raises(InvalidForecastError):
        QuantileForecast(**fields)


def test_lead_time_quantile_reads_and_interpolates_cumulative() -> None:
    fc = _forecast()
    assert fc.lead_time_quantile(0, 1, 0.5) == 2.0
    assert fc.lead_time_quantile(0, 2, 0.9) == 8.0
    assert fc.lead_time_quantile(0, 2, 0.7) == pytest.approx(6.0)  # halfway between 4 and 8
    assert fc.lead_time_quantile(0, 2, 0.3) == pytest.approx(3.5)
    # Clamped outside the forecast's levels.
    assert fc.lead_time_quantile(0, 2, 0.01) == 3.0
    assert fc.lead_time_quantile(0, 2, 0.99) == 8.0
    assert fc.lead_time_quantile(1, 0, 0.9) == 0.0


def test_lead_time_quantile_is_vectorised() -> None:
    fc = _forecast()
    np.testing.assert_allclose(fc.lead_time_quantile(None, 2, 0.9), [8.0, 3.0])
    np.testing.assert_allclose(fc.lead_time_quantile(np.array([1, 0]), 2, 0.5), [1.0, 4.0])
    assert isinstance(fc.lead_time_quantile(0, 2, 0.5), float)


def test_lead_time_quantile_extrapolates_past_the_horizon() -> None:
    fc = _forecast()
    # Series 0: M_H = 4 over H = 2; 8 steps -> ratio 4: mean 16, spread x2 around the mean.
    assert fc.lead_time_quantile(0, 8, 0.5) == pytest.approx(16.0)
    assert fc.lead_time_quantile(0, 8, 0.9) == pytest.approx(16.0 + 2.0 * (8.0 - 4.0))
    assert fc.lead_time_quantile(0, 8, 0.1) == pytest.approx(16.0 + 2.0 * (3.0 - 4.0))
    # Series 1: M_H = 1.5; 3 steps -> ratio 1.5 (sqrt(r) * M_H > M_H keeps it non-negative).
    assert fc.lead_time_quantile(1, 3, 0.1) == pytest.approx(2.25 - math.sqrt(1.5) * 1.5)
    expected = 1.5 * 1.5 + math.sqrt(1.5) * (3.0 - 1.5)
    assert fc.lead_time_quantile(1, 3, 0.9) == pytest.approx(expected)


def test_lead_time_quantile_rejects_bad_arguments() -> None:
    fc = _forecast()
    with pytest.raises(ValueError):
        fc.lead_time_quantile(0, -1, 0.5)
    with pytest.raises(ValueError):
        fc.lead_time_quantile(0, 2, 1.5)


@pytest.mark.parametrize("model", [SeasonalNaive(), MovingAverage()])
def test_forecasters_validate_windows(model: Forecaster) -> None:
    with pytest.raises(InvalidWindowError):
        model.predict(np.array([1.0, 2.0]), 3)  # 1-D
    with pytest.raises(InvalidWindowError):
        model.predict(np.array([[1.0, -2.0]]), 3)
    with pytest.raises(InvalidWindowError):
        model.predict(np.array([[1.0, np.inf]]), 3)
    with pytest.raises(InvalidWindowError):
        model.predict(np.ones((1, 5)), 0)


@pytest.mark.parametrize("model", [SeasonalNaive(), MovingAverage()])
def test_empty_batches_and_empty_history(model: Forecaster) -> None:
    assert model.predict(np.empty((0, 10)), 4).daily.shape == (0, 4, len(QUANTILE_LEVELS))
    fc = model.predict(np.full((3, 10), np.nan), 4)
    assert not fc.daily.any() and not fc.cumulative.any() and not fc.mean.any()
    assert model.predict(np.empty((2, 0)), 4).mean.shape == (2, 4)


def test_model_version_and_fit() -> None:
    model = SeasonalNaive()
    assert model.model_version == "seasonal_naive-1"
    assert MovingAverage().model_version == "moving_average-1"
    panel = Panel(("a", "b"), np.datetime64("2024-01-01"), np.ones((2, 10)))
    assert not model.fits and not model.needs_fit
    assert model.fit(panel) is model and model.fit_metrics == {}


def test_registry_builds_known_models_and_names_them_on_error() -> None:
    assert set(available_forecasters()) >= {"seasonal_naive", "moving_average"}
    model = make_forecaster("moving_average", window=14)
    assert isinstance(model, MovingAverage) and model.window == 14
    assert isinstance(make_forecaster("seasonal_naive", season=24), SeasonalNaive)
    with pytest.raises(ValueError, match="moving_average, seasonal_naive") as info:
        make_forecaster("no_such_model")
    assert isinstance(info.value, UnknownForecasterError)


def test_registry_accepts_new_models_once() -> None:
    register_forecaster("test_ma_7", lambda **kw: MovingAverage(7, **kw))
    try:
        assert isinstance(make_forecaster("test_ma_7"), MovingAverage)
        with pytest.raises(ValueError, match="already registered"):
            register_forecaster("test_ma_7", MovingAverage)
    finally:
        from forecasting import registry

        registry._REGISTRY.pop("test_ma_7")
