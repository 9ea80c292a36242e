"""Forecasters by name: the one place the CLI, stream and backtest turn a name into a model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from forecasting.base import Forecaster
from forecasting.errors import UnknownForecasterError
from forecasting.moving_average import MovingAverage
from forecasting.seasonal_naive import SeasonalNaive

__all__ = ["available_forecasters", "make_forecaster", "register_forecaster"]

ForecasterFactory = Callable[..., Forecaster]

_REGISTRY: dict[str, ForecasterFactory] = {
    SeasonalNaive.name: SeasonalNaive,
    MovingAverage.name: MovingAverage,
}


def register_forecaster(name: str, factory: ForecasterFactory, *, replace: bool = False) -> None:
    """Make `make_forecaster(name, **kwargs)` call `factory(**kwargs)` (e.g. the LSTM later).

    A factory may import heavy dependencies (torch) lazily, so registering costs nothing.
    """
    if not name:
        raise ValueError("forecaster name must be non-empty")
    if name in _REGISTRY and not replace:
        raise ValueError(f"forecaster {name!r} is already registered; pass replace=True")
    _REGISTRY[name] = factory


def available_forecasters() -> tuple[str, ...]:
    """Registered forecaster names, sorted."""
    return tuple(sorted(_REGISTRY))


def make_forecaster(name: str, **kwargs: Any) -> Forecaster:
    """Build the forecaster registered as `name` with `kwargs` as its constructor arguments.

    Raises UnknownForecasterError (a ValueError) listing the known names.
    """
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise UnknownForecasterError(name, available_forecasters()) from None
    return factory(**kwargs)
