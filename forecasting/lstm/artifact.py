"""Versioned model artifacts: weights (model.pt, and model.npz for the numpy backend) plus
JSON metadata (metadata.json) in a dir.

`python -m forecasting.lstm.artifact --add-npz DIR` adds model.npz to a directory saved
before it existed (needs torch, to read model.pt).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from forecasting.calibration import IntervalCalibration
from forecasting.lstm.artifact_files import (
    ARTIFACT_FORMAT,
    METADATA_FILE,
    NPZ_FILE,
    WEIGHTS_FILE,
    ArtifactError,
    read_metadata,
    write_npz,
)
from forecasting.lstm.config import config_input_dim
from forecasting.lstm.features import CALENDAR_DIM, INPUT_DIM, RING_DAYS, SCALE_FLOOR
from forecasting.lstm.forecaster import LSTMForecaster
from forecasting.lstm.model import LSTMConfig, LSTMNet

__all__ = [
    "ARTIFACT_FORMAT",
    "ArtifactError",
    "ArtifactInfo",
    "add_npz",
    "load_artifact",
    "read_metadata",
    "save_artifact",
]

INPUT_FEATURES = (
    ["demand_scaled", "missing", "log_scale"]
    + [f"weekday_{d}" for d in range(7)]
    + [f"month_{m}" for m in range(1, 13)]
    + ["holiday"]
)
assert len(INPUT_FEATURES) == INPUT_DIM and CALENDAR_DIM == 20
PROMO_INPUT = "promo"  # the last input with LSTMConfig.promo_inputs (features.PROMO_DIM)


def input_names(config: LSTMConfig) -> list[str]:
    """The per-day inputs of a net with `config`, in order (the metadata's input width: an
    artifact from before promotion inputs lists INPUT_DIM of them)."""
    return INPUT_FEATURES + ([PROMO_INPUT] if config.promo_inputs else [])


@dataclass
class ArtifactInfo:
    """What is known about a trained model besides its weights."""

    model_id: str
    created_at: str
    data_fingerprint: str
    data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)


def _numpy_weights(net: LSTMNet) -> dict[str, Any]:
    """The state_dict as float32 arrays, in its order (what durable.fingerprint hashes)."""
    with torch.no_grad():
        return {name: t.detach().to("cpu", torch.float32).numpy().copy()
                for name, t in net.state_dict().items()}


def _weights_bytes(net: LSTMNet) -> bytes:
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    return buf.getvalue()


def save_artifact(
    forecaster: LSTMForecaster,
    out_dir: str | Path,
    *,
    data_fingerprint: str,
    data: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    history: list[dict[str, float]] | None = None,
) -> ArtifactInfo:
    """Write `forecaster` to `out_dir` (created) and stamp it with a content-derived id.

    The id is the first 12 hex digits of sha256(weights, config, scaling): the same model
    always gets the same id, a retrained one a new id, which workers write into
    ForecastEvent.model_version ("lstm-1+<id>").
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = forecaster.net.cpu()
    weights = _weights_bytes(net)
    scaling = {"log_scale_mean": forecaster.log_scale_mean,
               "log_scale_std": forecaster.log_scale_std,
               "scale_memory": forecaster.config.scale_memory, "scale_floor": SCALE_FLOOR,
               "kind": "running mean (EMA after scale_memory buckets), causal"}
    calibration = (None if forecaster.calibration is None
                   else forecaster.calibration.to_json())
    digest = hashlib.sha256(weights)
    digest.update(json.dumps([forecaster.config.to_json(), scaling], sort_keys=True).encode())
    if calibration is not None:  # (without one, ids stay what they were before calibration)
        digest.update(json.dumps(calibration, sort_keys=True).encode())
    model_id = digest.hexdigest()[:12]
    info = ArtifactInfo(model_id=model_id, created_at=datetime.now(UTC).isoformat(),
                        data_fingerprint=data_fingerprint, data=dict(data or {}),
                        metrics=dict(metrics or {}), history=list(history or []))
    meta = {
        "format": ARTIFACT_FORMAT,
        "model": forecaster.name,
        "model_class_version": forecaster.version,
        "model_id": model_id,
        "model_version": f"{forecaster.name}-{forecaster.version}+{model_id}",
        "created_at": info.created_at,
        "torch_version": torch.__version__,
        "config": forecaster.config.to_json(),
        "features": {"inputs": input_names(forecaster.config),
            "head": _head_features(forecaster.config),
            "calendar": forecaster.config.calendar,
            # days of demand a full-window forecast reads (the year-ago head inputs); the
            # incremental state carries them as a ring
            "window_days_used": RING_DAYS if forecaster.config.year_ago else None},
        "horizon": forecaster.config.horizon,
        "levels": list(forecaster.config.levels),
        "scaling": scaling,
        "calibration": calibration,
        "data_fingerprint": data_fingerprint,
        "data": info.data,
        "metrics": info.metrics,
        "history": info.history,
    }
    (out / WEIGHTS_FILE).write_bytes(weights)
    write_npz(out / NPZ_FILE, _numpy_weights(net), meta)
    (out / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n")
    forecaster.net.to(forecaster.device)
    forecaster.model_id = model_id
    return info


def _head_features(config: LSTMConfig) -> list[str]:
    steps = range(1, config.horizon + 1)
    names = [f"holiday_t+{h}" for h in steps]
    if config.head_calendar:
        names += [f"later_month_t+{h}" for h in steps]
        names += [f"month_{m}_t+{config.horizon}" for m in range(1, 13)]
    if config.head_annual:
        names += ["year_sin_t", "year_cos_t"]
    if config.head_month == "onehot":
        names += [f"month_{m}_t+{h}" for h in steps for m in range(1, 13)]
    elif config.head_month == "fourier":
        names += [f"day_of_year_{f}{k}_t+{h}" for h in steps
                  for f in ("sin", "cos") for k in range(1, config.head_month_pairs + 1)]
    if config.promo_inputs:
        names += [f"promo_t+{h}" for h in steps]
    if config.year_ago:
        names += [f"year_ago_week_t+{h}_over_scale" for h in steps]
        names += ["year_ago_level_over_scale"]
        names += [f"year_ago_week_t+{h}_over_year_ago_level" for h in steps]
        names += ["year_ago_known"]
    return names


def load_artifact(path: str | Path, *, device: str = "auto") -> LSTMForecaster:
    """Load a forecaster saved by `save_artifact` onto `device` (auto: CUDA if present)."""
    meta = read_metadata(path)
    weights = Path(path) / WEIGHTS_FILE
    if not weights.exists():
        raise ArtifactError(f"{path}: no {WEIGHTS_FILE}")
    config = LSTMConfig.from_json(meta["config"])
    inputs = (meta.get("features") or {}).get("inputs")
    if inputs is not None and len(inputs) != config_input_dim(config):
        raise ArtifactError(f"{path}: {len(inputs)} inputs per day, its config reads "
                            f"{config_input_dim(config)}")
    net = LSTMNet(config_input_dim(config), config)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    scaling = meta["scaling"]
    return LSTMForecaster(net, log_scale_mean=scaling["log_scale_mean"],
                          log_scale_std=scaling["log_scale_std"], model_id=meta["model_id"],
                          device=device,
                          calibration=IntervalCalibration.from_json(meta.get("calibration")))


def add_npz(path: str | Path) -> Path:
    """Write model.npz into the artifact directory `path` from its model.pt (the same
    weights, model id and fingerprint); returns the file written."""
    meta = read_metadata(path)
    forecaster = load_artifact(path, device="cpu")
    out = Path(path) / NPZ_FILE
    write_npz(out, _numpy_weights(forecaster.net), meta)
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m forecasting.lstm.artifact --add-npz DIR [DIR ...]`."""
    parser = argparse.ArgumentParser(prog="python -m forecasting.lstm.artifact",
                                     description="Add model.npz (the numpy serving backend's "
                                                 "weights) to saved model directories.")
    parser.add_argument("--add-npz", nargs="+", metavar="DIR", required=True,
                        help="model directories holding model.pt and metadata.json")
    args = parser.parse_args(argv)
    for path in args.add_npz:
        try:
            written = add_npz(path)
        except (ArtifactError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
