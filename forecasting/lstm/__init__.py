"""The global probabilistic LSTM: features, network, training, artifacts (torch is lazy).

Importing this package costs nothing: torch loads on first use of a name below, so the
registry can list "lstm" in processes that never forecast with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from forecasting.registry import available_forecasters, register_forecaster

if TYPE_CHECKING:
    from forecasting.lstm.artifact import (
        ArtifactError,
        ArtifactInfo,
        load_artifact,
        read_metadata,
        save_artifact,
    )
    from forecasting.lstm.forecaster import LSTMForecaster, SeriesState, auto_device
    from forecasting.lstm.model import LSTMConfig, LSTMNet
    from forecasting.lstm.training import TrainResult, train_lstm

__all__ = [
    "ArtifactError",
    "ArtifactInfo",
    "LSTMConfig",
    "LSTMForecaster",
    "LSTMNet",
    "SeriesState",
    "TrainResult",
    "auto_device",
    "load_artifact",
    "make_lstm",
    "read_metadata",
    "save_artifact",
    "train_lstm",
]

_LAZY = {
    "ArtifactError": "artifact", "ArtifactInfo": "artifact", "load_artifact": "artifact",
    "read_metadata": "artifact", "save_artifact": "artifact",
    "LSTMForecaster": "forecaster", "SeriesState": "forecaster", "auto_device": "forecaster",
    "LSTMConfig": "model", "LSTMNet": "model",
    "TrainResult": "training", "train_lstm": "training",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'forecasting.lstm' has no attribute {name!r}")
    return getattr(importlib.import_module(f"forecasting.lstm.{module}"), name)


def make_lstm(path: str | None = None, *, device: str = "auto",
              **config: Any) -> LSTMForecaster:
    """Registry factory: `make_forecaster("lstm", path=DIR)` loads a trained artifact;
    without a path it returns an untrained model (config overrides as kwargs) that `fit`
    trains."""
    from forecasting.lstm.artifact import load_artifact
    from forecasting.lstm.features import INPUT_DIM
    from forecasting.lstm.forecaster import LSTMForecaster
    from forecasting.lstm.model import LSTMConfig, LSTMNet

    if path is not None:
        return load_artifact(path, device=device)
    return LSTMForecaster(LSTMNet(INPUT_DIM, LSTMConfig(**config)), device=device)


if "lstm" not in available_forecasters():
    register_forecaster("lstm", make_lstm)
