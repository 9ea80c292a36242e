"""Model directories: the one place that reads a trained artifact directory and returns the
forecaster it holds (the LSTM's or the `lstm_lgbm` combination's), trains one of those by
name and writes it, for the worker, `shelfcast train`, the demo and the retrain loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forecasting.base import Forecaster
from forecasting.data import Panel

if TYPE_CHECKING:
    from forecasting.lstm.model import LSTMConfig

__all__ = ["SAVABLE", "TrainedModel", "load_model_dir", "model_dir_version", "save_model_dir",
           "saved_model_name", "train_model"]

SAVABLE = ("lstm", "lstm_lgbm")  # registered names this module trains, writes and reads


@dataclass
class TrainedModel:
    """A model trained by `train_model` and how its training went."""

    forecaster: Forecaster
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)


def train_model(name: str, panel: Panel, config: LSTMConfig, *, device: str = "auto",
                progress: bool = False, max_seconds: float | None = None,
                on_epoch: Callable[[int, float, float], None] | None = None,
                lightgbm_options: dict[str, Any] | None = None) -> TrainedModel:
    """Train the savable model `name` on every series of `panel`: the LSTM (`train_lstm`,
    with `max_seconds` and `on_epoch`), and for `lstm_lgbm` then its LightGBM part
    (`lightgbm_options`: LightGBMConfig fields; default: the peer's) and weights
    (`LSTMLightGBMForecaster.fit_peer`)."""
    from forecasting.lstm import train_lstm

    if name not in SAVABLE:
        raise ValueError(f"model {name!r} has no saved form (savable: {', '.join(SAVABLE)})")
    result = train_lstm(panel, config, device=device, progress=progress, on_epoch=on_epoch,
                        max_seconds=max_seconds)
    if name == "lstm":
        return TrainedModel(result.forecaster, dict(result.metrics), list(result.history))
    from forecasting.combination import LSTMLightGBMForecaster

    combined = LSTMLightGBMForecaster(result.forecaster,
                                      lightgbm_options=lightgbm_options).fit_peer(panel)
    metrics = {**result.metrics, **combined.fit_metrics}
    metrics["train_seconds"] = result.metrics.get("train_seconds", 0.0) + combined.fit_info.get(
        "train_seconds", 0.0)
    return TrainedModel(combined, metrics, list(result.history))


def save_model_dir(model: Forecaster, out_dir: str | Path, *, data_fingerprint: str,
                   data: dict[str, Any] | None = None, metrics: dict[str, float] | None = None,
                   history: list[dict[str, float]] | None = None) -> str:
    """Write `model` (an LSTM or an `lstm_lgbm`) to `out_dir`; returns its model version."""
    from forecasting.combination import LSTMLightGBMForecaster, save_combination
    from forecasting.lstm.forecaster import LSTMForecaster

    if isinstance(model, LSTMLightGBMForecaster):
        save_combination(model, out_dir, data_fingerprint=data_fingerprint, data=data,
                         metrics=metrics)
    elif isinstance(model, LSTMForecaster):
        from forecasting.lstm.artifact import save_artifact

        save_artifact(model, out_dir, data_fingerprint=data_fingerprint, data=data,
                      metrics=metrics, history=history)
    else:
        raise ValueError(f"model {model.name!r} has no saved form "
                         f"(savable: {', '.join(SAVABLE)})")
    return model.model_version


def saved_model_name(path: str | Path) -> str:
    """The registered name of the model saved in `path` (metadata.json's "model")."""
    from forecasting.lstm.artifact_files import read_metadata

    return str(read_metadata(path).get("model", "lstm"))


def model_dir_version(path: str | Path) -> str:
    """The model version stamped on the directory (what forecasts carry)."""
    from forecasting.lstm.artifact_files import read_metadata

    return str(read_metadata(path)["model_version"])


def load_model_dir(path: str | Path, *, device: str = "auto",
                   backend: str | None = None) -> Forecaster:
    """The forecaster saved in `path`, whichever loadable model it is, through its registry
    factory (`backend`: the LSTM's, where it has a choice); ArtifactError (a ValueError) for
    a directory that holds none."""
    from forecasting.lstm.artifact_files import ArtifactError

    name = saved_model_name(path)
    if name == "lstm":
        from forecasting.lstm import make_lstm

        chosen: dict[str, Any] = {} if backend is None else {"backend": backend}
        return make_lstm(str(path), device=device, **chosen)
    if name == "lstm_lgbm":
        from forecasting.combination import load_combination

        return load_combination(path, device=device, backend=backend)
    raise ArtifactError(f"{path}: holds a {name!r} model, which no loader reads")
