"""The global probabilistic LSTM: features, network, training, artifacts (torch is lazy).

Training needs torch (the `train` extra); a trained artifact is served on CPU in numpy
(numpy_forecaster.py, from its model.npz) without importing torch (`make_lstm`'s backend).

Importing this package costs nothing: torch loads on first use of a name below, so the
registry (which builds "lstm" through `make_lstm`) can list it in processes that never
forecast with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from forecasting.errors import ForecastingError

if TYPE_CHECKING:
    from forecasting.base import Forecaster
    from forecasting.lstm.artifact import (
        ArtifactError,
        ArtifactInfo,
        load_artifact,
        read_metadata,
        save_artifact,
    )
    from forecasting.lstm.config import LSTMConfig
    from forecasting.lstm.device import auto_device
    from forecasting.lstm.forecaster import LSTMForecaster, TrainResult, train_lstm
    from forecasting.lstm.model import LSTMNet
    from forecasting.lstm.state import SeriesState

__all__ = [
    "ArtifactError",
    "ArtifactInfo",
    "LSTMConfig",
    "LSTMForecaster",
    "LSTMNet",
    "SeriesState",
    "TorchMissingError",
    "TrainResult",
    "auto_device",
    "load_artifact",
    "make_lstm",
    "read_metadata",
    "save_artifact",
    "train_lstm",
]



class TorchMissingError(ForecastingError, ModuleNotFoundError):
    """What needs torch was asked for without torch installed (the `train` extra)."""


_LAZY = {
    "ArtifactError": "artifact_files", "ArtifactInfo": "artifact",
    "load_artifact": "artifact", "read_metadata": "artifact_files", "save_artifact": "artifact",
    "LSTMForecaster": "forecaster", "SeriesState": "state", "auto_device": "device",
    "LSTMConfig": "config", "LSTMNet": "model",
    "TrainResult": "forecaster", "train_lstm": "forecaster",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'forecasting.lstm' has no attribute {name!r}")
    return getattr(importlib.import_module(f"forecasting.lstm.{module}"), name)


def make_lstm(path: str | None = None, *, device: str = "auto", backend: str | None = None,
              config: LSTMConfig | None = None, progress: bool = False,
              **overrides: Any) -> Forecaster:
    """Registry factory: `make_forecaster("lstm", path=DIR)` loads a trained artifact;
    without a path it returns an untrained model that `fit(panel)` trains: `config` (default
    LSTMConfig()) with `overrides` (config fields as kwargs); `progress` shows a bar while
    it trains.

    `backend` (default: SHELFCAST_LSTM_BACKEND, else "auto") says what serves a loaded
    artifact: "numpy" (numpy_forecaster.py, from model.npz, CPU only, no torch), "torch"
    (LSTMForecaster on `device`), "auto": numpy unless the device is CUDA (asked for, or
    "auto" with torch installed and a GPU present) or the artifact has no model.npz."""
    import dataclasses
    import os

    choice = backend or os.environ.get("SHELFCAST_LSTM_BACKEND", "auto")
    if choice not in ("auto", "numpy", "torch"):
        raise ValueError(f"LSTM backend must be auto, numpy or torch, got {choice!r}")
    if path is not None and _serves_with_numpy(path, choice, device):
        from forecasting.lstm.artifact_files import load_numpy

        return load_numpy(path)
    try:
        from forecasting.lstm.artifact import load_artifact
        from forecasting.lstm.forecaster import LSTMForecaster
        from forecasting.lstm.model import LSTMConfig, LSTMNet
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            raise
        from forecasting.lstm.numpy_forecaster import TRAIN_EXTRA_HINT

        if path is None:
            raise TorchMissingError(f"training the LSTM needs torch: {TRAIN_EXTRA_HINT}") from None
        raise TorchMissingError(
            f"{path} has no model.npz (saved before it existed), so serving it needs torch: "
            f"{TRAIN_EXTRA_HINT}; or add model.npz once where torch is installed: python -m "
            f"forecasting.lstm.artifact --add-npz {path}") from None
    from forecasting.lstm.config import config_input_dim

    if path is not None:
        return load_artifact(path, device=device)
    if "levels" in overrides:  # a tuple in the frozen config, whatever sequence is given
        overrides["levels"] = tuple(overrides["levels"])
    base = LSTMConfig() if config is None else config
    cfg = dataclasses.replace(base, **overrides) if overrides else base
    return LSTMForecaster(LSTMNet(config_input_dim(cfg), cfg), device=device,
                          progress=progress)


def _serves_with_numpy(path: str, backend: str, device: str) -> bool:
    """Whether `make_lstm` serves the artifact in `path` with the numpy backend."""
    import importlib.util
    from pathlib import Path

    from forecasting.lstm.artifact_files import NPZ_FILE

    if backend == "torch" or device == "cuda":
        if backend == "numpy":
            raise ValueError("the numpy LSTM backend runs on CPU only (device=cuda asked)")
        return False
    if backend == "numpy":
        return True
    if not (Path(path) / NPZ_FILE).exists():
        return False  # an artifact from before model.npz: torch serves it
    if device == "auto" and importlib.util.find_spec("torch") is not None:
        from forecasting.lstm.device import auto_device

        return auto_device("auto").type == "cpu"
    return True
