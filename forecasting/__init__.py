"""Demand forecasters behind one small contract, their registry, and accuracy metrics."""

from __future__ import annotations

from forecasting.base import (
    QUANTILE_LEVELS,
    Forecaster,
    IncrementalForecaster,
    QuantileForecast,
)
from forecasting.errors import (
    ForecastingError,
    InvalidForecastError,
    InvalidWindowError,
    UnknownForecasterError,
)
from forecasting.lstm import make_lstm  # torch loads on first use
from forecasting.metrics import coverage, mase, pinball, wape
from forecasting.model_dir import load_model_dir
from forecasting.moving_average import MovingAverage
from forecasting.registry import (
    ModelInfo,
    available_forecasters,
    forecaster_info,
    make_forecaster,
    register_forecaster,
)
from forecasting.seasonal_naive import SeasonalNaive

__all__ = [
    "QUANTILE_LEVELS",
    "Forecaster",
    "ForecastingError",
    "IncrementalForecaster",
    "InvalidForecastError",
    "InvalidWindowError",
    "ModelInfo",
    "MovingAverage",
    "QuantileForecast",
    "SeasonalNaive",
    "UnknownForecasterError",
    "available_forecasters",
    "coverage",
    "forecaster_info",
    "load_model_dir",
    "make_forecaster",
    "make_lstm",
    "mase",
    "pinball",
    "register_forecaster",
    "wape",
]
