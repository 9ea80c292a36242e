"""Typed errors raised by the forecasting layer (all are ValueErrors: bad inputs, bad names)."""

from __future__ import annotations

__all__ = [
    "ForecastingError",
    "InvalidForecastError",
    "InvalidWindowError",
    "UnknownForecasterError",
]


class ForecastingError(ValueError):
    """Base class of every forecasting-layer error."""


class InvalidForecastError(ForecastingError):
    """A QuantileForecast whose arrays have the wrong shape or are not valid quantiles."""


class InvalidWindowError(ForecastingError):
    """Demand windows or a horizon that a forecaster cannot accept (shape, sign, infinities)."""


class UnknownForecasterError(ForecastingError):
    """A forecaster name that the registry does not know; `known` lists the names it does."""

    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        super().__init__(
            f"unknown forecaster {name!r}; known forecasters: {', '.join(known) or '(none)'}"
        )
        self.name = name
        self.known = known
