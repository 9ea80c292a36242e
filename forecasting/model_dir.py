"""Model directories: the one place that reads a trained artifact directory and returns the
forecaster it holds (the LSTM's or the `lstm_lgbm` combination's), for the worker, the demo
and the retrain loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forecasting.base import Forecaster

__all__ = ["load_model_dir", "model_dir_version", "saved_model_name"]


def saved_model_name(path: str | Path) -> str:
    """The registered name of the model saved in `path` (metadata.json's "model")."""
    from forecasting.lstm.artifact import read_metadata

    return str(read_metadata(path).get("model", "lstm"))


def model_dir_version(path: str | Path) -> str:
    """The model version stamped on the directory (what forecasts carry)."""
    from forecasting.lstm.artifact import read_metadata

    return str(read_metadata(path)["model_version"])


def load_model_dir(path: str | Path, *, device: str = "auto", **_: Any) -> Forecaster:
    """The forecaster saved in `path`, whichever loadable model it is; ArtifactError (a
    ValueError) for a directory that holds none."""
    from forecasting.lstm.artifact import ArtifactError

    name = saved_model_name(path)
    if name == "lstm":
        from forecasting.lstm.artifact import load_artifact

        return load_artifact(path, device=device)
    if name == "lstm_lgbm":
        from forecasting.combination import load_combination

        return load_combination(path, device=device)
    raise ArtifactError(f"{path}: holds a {name!r} model, which no loader reads")
