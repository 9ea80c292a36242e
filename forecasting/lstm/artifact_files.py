"""The files of a model directory that serving reads without torch: metadata.json and
model.npz (the weights as float32 arrays by state_dict name, beside torch's model.pt).

model.npz holds one array per `LSTMNet.state_dict()` entry, in state_dict order, and
`__meta__`: UTF-8 JSON of what the numpy backend needs besides the weights (config, input
normalisation, calibration, model id), so the file alone makes a forecaster. It is written
with `allow_pickle` off and read the same way. The model id and fingerprint are those of
the torch weights (`artifact.save_artifact`), so the version a worker reports does not
depend on the backend that serves it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from forecasting.calibration import IntervalCalibration
from forecasting.errors import ForecastingError
from forecasting.lstm.config import LSTMConfig

if TYPE_CHECKING:
    from forecasting.lstm.numpy_forecaster import NumpyLSTMForecaster

__all__ = ["ARTIFACT_FORMAT", "METADATA_FILE", "NPZ_FILE", "WEIGHTS_FILE", "ArtifactError",
           "load_numpy", "read_metadata", "write_npz"]

ARTIFACT_FORMAT = 1
WEIGHTS_FILE, METADATA_FILE, NPZ_FILE = "model.pt", "metadata.json", "model.npz"
_META_KEY = "__meta__"


class ArtifactError(ForecastingError):
    """A model directory that is missing, incomplete or of an unknown format."""


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata.json of an artifact directory."""
    meta_path = Path(path) / METADATA_FILE
    if not meta_path.exists():
        raise ArtifactError(f"{path}: no {METADATA_FILE} (not a model directory)")
    meta: dict[str, Any] = json.loads(meta_path.read_text())
    if meta.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(f"{path}: artifact format {meta.get('format')!r}, "
                            f"this code reads {ARTIFACT_FORMAT}")
    return meta


def write_npz(path: str | Path, weights: Mapping[str, NDArray[np.generic]],
              meta: Mapping[str, Any]) -> None:
    """Write model.npz: `weights` (state_dict order) as float32, `meta` as JSON (the
    artifact metadata's config, scaling, calibration, model_id)."""
    keep = {k: meta.get(k) for k in ("format", "model_id", "model_version", "config",
                                     "scaling", "calibration", "data_fingerprint")}
    keep["weights"] = list(weights)
    arrays = {name: np.ascontiguousarray(arr, dtype=np.float32)
              for name, arr in weights.items()}
    arrays[_META_KEY] = np.frombuffer(json.dumps(keep, default=str).encode(), dtype=np.uint8)
    tmp = Path(path).with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)  # type: ignore[arg-type]  # uncompressed: float32 weights barely compress
    tmp.replace(path)  # a poller never reads half a file


def read_npz(path: str | Path) -> tuple[dict[str, NDArray[np.float32]], dict[str, Any]]:
    """(weights by name in state_dict order, meta) of a model.npz."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta: dict[str, Any] = json.loads(bytes(data[_META_KEY]).decode())
            weights = {name: np.asarray(data[name], dtype=np.float32)
                       for name in meta["weights"]}
    except (KeyError, ValueError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: not a model.npz this code reads ({exc})") from exc
    if meta.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(f"{path}: artifact format {meta.get('format')!r}, "
                            f"this code reads {ARTIFACT_FORMAT}")
    return weights, meta


def load_numpy(path: str | Path) -> NumpyLSTMForecaster:
    """The numpy-served forecaster of the artifact directory `path` (from its model.npz)."""
    from forecasting.lstm.numpy_forecaster import NumpyLSTMForecaster

    npz = Path(path) / NPZ_FILE
    if not npz.exists():
        raise ArtifactError(f"{path}: no {NPZ_FILE} (add it with `python -m "
                            f"forecasting.lstm.artifact --add-npz {path}`)")
    weights, meta = read_npz(npz)
    scaling = meta["scaling"]
    return NumpyLSTMForecaster(
        LSTMConfig.from_json(meta["config"]), weights,
        log_scale_mean=scaling["log_scale_mean"], log_scale_std=scaling["log_scale_std"],
        model_id=meta["model_id"],
        calibration=IntervalCalibration.from_json(meta.get("calibration")))
