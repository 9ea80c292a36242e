"""Forecasters by name: the one place the CLI, stream, simulation and backtest turn a name
into a model, and learn what kind of model it is (fitted on a panel, incremental, loadable).

Every built-in model is listed here; the heavy ones (ETS: statsforecast, LightGBM, the LSTM:
torch) are imported on first build, so importing the registry costs nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from forecasting.base import Forecaster
from forecasting.errors import UnknownForecasterError

__all__ = [
    "ModelInfo",
    "available_forecasters",
    "forecaster_info",
    "make_forecaster",
    "register_forecaster",
]

ForecasterFactory = Callable[..., Forecaster]


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows of a model before building it.

    `factory`: a callable, or "module:attribute" imported on first build (heavy libraries).
    `fits`: a global model that `fit(panel)` trains; unfitted, it cannot forecast usefully.
    `incremental`: it speaks `forecasting.base.IncrementalForecaster` (carried state).
    `loads_artifact`: the factory loads a trained model from `path=DIR` (`shelfcast train`),
    which is how a stream serves a fitted model.
    `options`: the shared settings (see `make_forecaster(shared=...)`) the factory takes.
    """

    name: str
    factory: ForecasterFactory | str
    summary: str = ""
    fits: bool = False
    incremental: bool = False
    loads_artifact: bool = False
    options: tuple[str, ...] = ()

    def build(self, **kwargs: Any) -> Forecaster:
        """Call the factory (importing it first when it is named by a string)."""
        factory = self.factory
        if isinstance(factory, str):
            module, _, attribute = factory.partition(":")
            factory = getattr(importlib.import_module(module), attribute)
        return factory(**kwargs)


_BUILT_IN = (
    ModelInfo("seasonal_naive", "forecasting.seasonal_naive:SeasonalNaive",
              "last season repeated; spread from its own past errors"),
    ModelInfo("moving_average", "forecasting.moving_average:MovingAverage",
              "mean of the last 28 buckets; spread from their quantiles"),
    ModelInfo("ets", "forecasting.ets:ETSForecaster",
              "per-series AutoETS fitted to each window (statsforecast)", options=("n_jobs",)),
    ModelInfo("tsb", "forecasting.intermittent:TSBForecaster",
              "per-series TSB for intermittent demand (statsforecast), zero-inflated quantiles"),
    ModelInfo("lightgbm", "forecasting.lightgbm_peer:LightGBMForecaster",
              "global LightGBM on lag and calendar features, one model per quantile",
              fits=True, options=("horizon",)),
    ModelInfo("lstm_lgbm", "forecasting.combination:make_lstm_lgbm",
              "the LSTM and LightGBM mixed per quantile level (weights learned on the "
              "LSTM's validation days), incremental per series",
              fits=True, incremental=True, loads_artifact=True,
              options=("path", "device", "backend", "config", "max_epochs", "progress")),
    ModelInfo("lstm", "forecasting.lstm:make_lstm",
              "global probabilistic LSTM (torch trains; numpy or torch serves), "
              "incremental per series",
              fits=True, incremental=True, loads_artifact=True,
              options=("path", "device", "backend", "config", "max_epochs", "progress")),
)

_REGISTRY: dict[str, ModelInfo] = {info.name: info for info in _BUILT_IN}


def register_forecaster(name: str, factory: ForecasterFactory | str, *, replace: bool = False,
                        fits: bool = False, incremental: bool = False,
                        loads_artifact: bool = False, options: tuple[str, ...] = (),
                        summary: str = "") -> None:
    """Make `make_forecaster(name, **kwargs)` call `factory(**kwargs)`.

    `factory` may be "module:attribute" so that registering imports nothing; the flags say
    what kind of model it builds (see ModelInfo).
    """
    if not name:
        raise ValueError("forecaster name must be non-empty")
    if name in _REGISTRY and not replace:
        raise ValueError(f"forecaster {name!r} is already registered; pass replace=True")
    _REGISTRY[name] = ModelInfo(name, factory, summary, fits=fits, incremental=incremental,
                                loads_artifact=loads_artifact, options=tuple(options))


def available_forecasters() -> tuple[str, ...]:
    """Registered forecaster names, sorted."""
    return tuple(sorted(_REGISTRY))


def forecaster_info(name: str) -> ModelInfo:
    """What the registry knows of `name`; UnknownForecasterError (a ValueError) listing the
    known names when it knows nothing."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownForecasterError(name, available_forecasters()) from None


def make_forecaster(name: str, *, shared: Mapping[str, Any] | None = None,
                    **kwargs: Any) -> Forecaster:
    """Build the forecaster registered as `name` with `kwargs` as its constructor arguments.

    `shared`: settings a caller offers every model at once (a CLI's `horizon`, `n_jobs`,
    `device`, ...); the model takes those its ModelInfo.options list and leaves the rest;
    `kwargs` win over them. Raises UnknownForecasterError (a ValueError) listing the known
    names.
    """
    info = forecaster_info(name)
    offered = {k: v for k, v in (shared or {}).items() if k in info.options}
    return info.build(**{**offered, **kwargs})
