"""The global probabilistic LSTM: features, network, training, artifacts (torch is lazy).

Importing this package costs nothing: torch loads on first use of a name below, so the
registry (which builds "lstm" through `make_lstm`) can list it in processes that never
forecast with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from forecasting.lstm.artifact import (
        ArtifactError,
        ArtifactInfo,
        load_artifact,
        read_metadata,
        save_artifact,
    )
    from forecasting.lstm.device import auto_device
    from forecasting.lstm.forecaster import LSTMForecaster, TrainResult, train_lstm
    from forecasting.lstm.model import LSTMConfig, LSTMNet
    from forecasting.lstm.state import SeriesState

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
    "LSTMForecaster": "forecaster", "SeriesState": "state", "auto_device": "device",
    "LSTMConfig": "model", "LSTMNet": "model",
    "TrainResult": "forecaster", "train_lstm": "forecaster",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'forecasting.lstm' has no attribute {name!r}")
    return getattr(importlib.import_module(f"forecasting.lstm.{module}"), name)


def make_lstm(path: str | None = None, *, device: str = "auto",
              config: LSTMConfig | None = None, progress: bool = False,
              **overrides: Any) -> LSTMForecaster:
    """Registry factory: `make_forecaster("lstm", path=DIR)` loads a trained artifact;
    without a path it returns an untrained model that `fit(panel)` trains: `config` (default
    LSTMConfig()) with `overrides` (config fields as kwargs); `progress` shows a bar while
    it trains."""
    import dataclasses

    from forecasting.lstm.artifact import load_artifact
    from forecasting.lstm.features import INPUT_DIM
    from forecasting.lstm.forecaster import LSTMForecaster
    from forecasting.lstm.model import LSTMConfig, LSTMNet

    if path is not None:
        return load_artifact(path, device=device)
    if "levels" in overrides:  # a tuple in the frozen config, whatever sequence is given
        overrides["levels"] = tuple(overrides["levels"])
    base = LSTMConfig() if config is None else config
    cfg = dataclasses.replace(base, **overrides) if overrides else base
    return LSTMForecaster(LSTMNet(INPUT_DIM, cfg), device=device, progress=progress)
