"""Small LSTMs trained on the spot for the demo, the pipeline bench and the tests, cached by
what they were trained on (the panel's data fingerprint and the config).

`shelfcast train` is how a real model is made; this is for the commands that must serve the
default model (the LSTM) and have none given: they train a small one in seconds (CPU) or
reuse the one trained before on the same data, under `~/.cache/shelfcast/models/<key>`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from forecasting.data import Panel
from runtime.cache import cache_base

__all__ = ["QuickModel", "cache_root", "quick_config", "synthetic_panel", "train_or_reuse"]

# Small enough for tens of CPU-seconds on a few hundred series x a year, big enough to beat
# the moving average on UCI (README "Demo"): 32 hidden units, a few epochs, early stopping
# on the last two weeks.
QUICK = {"hidden": 32, "head_hidden": 32, "max_epochs": 6, "patience": 2, "val_days": 14,
         "batch_series": 32}
# The LightGBM part of a quick lstm_lgbm: fewer rounds and rows than the peer's defaults (150
# rounds, 120k rows: ~90 s per fit on UCI, two fits per training) so the demo starts in about
# the time the LSTM alone took; its accuracy was not measured apart (the benchmarks use the
# peer's defaults).
QUICK_LIGHTGBM = {"n_estimators": 60, "max_rows": 40_000}
TINY = {"hidden": 8, "head_hidden": 8, "max_epochs": 2, "patience": 1, "val_days": 14,
        "batch_series": 32, "year_ago": False}


@dataclass(frozen=True)
class QuickModel:
    """A model directory ready for SHELFCAST_MODEL_PATH and what it is."""

    path: Path
    model_version: str
    reused: bool  # found in the cache (not trained by this call)
    train_cpu_s: float  # CPU seconds this call spent training (0 when reused)
    n_series: int
    n_days: int


def cache_root() -> Path:
    """Where trained quick models are kept: `$SHELFCAST_CACHE_DIR/models`, else
    `~/.cache/shelfcast/models` (beside the Kafka jars' cache)."""
    return cache_base() / "models"


def quick_config(horizon: int = 14, *, tiny: bool = False, **overrides: Any) -> Any:
    """The LSTMConfig quick models train with (`tiny`: seconds, for tests)."""
    from forecasting.lstm import LSTMConfig

    values = {**(TINY if tiny else QUICK), **overrides}
    return LSTMConfig(horizon=horizon, **values)


def synthetic_panel(n_series: int, n_days: int, mean_per_day: float, *, seed: int = 0,
                    end_day: str = "2023-12-31") -> Panel:
    """Poisson daily demand with a weekly profile around per-series rates (log-normal around
    `mean_per_day`): what the pipeline bench's SKUs sell, to train its model on."""
    rng = np.random.default_rng(seed)
    rates = mean_per_day * rng.lognormal(0.0, 0.5, size=(n_series, 1))
    weekly = 1.0 + 0.3 * np.sin(2 * np.pi * np.arange(n_days) / 7.0)
    values = rng.poisson(rates * weekly[None, :]).astype(np.float64)
    start = np.datetime64(end_day, "D") - np.timedelta64(n_days - 1, "D")
    return Panel(tuple(f"s{i}" for i in range(n_series)), start, values)


def _key(panel: Panel, config: Any, model: str = "lstm") -> str:
    digest = hashlib.sha256(panel.fingerprint().encode())
    digest.update(json.dumps(config.to_json(), sort_keys=True).encode())
    if model != "lstm":  # (the LSTM's keys stay what they were)
        digest.update(json.dumps([model, QUICK_LIGHTGBM], sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _read_version(path: Path) -> str | None:
    from forecasting.lstm.artifact_files import ArtifactError, read_metadata

    try:
        return str(read_metadata(path)["model_version"])
    except (ArtifactError, OSError, ValueError, KeyError):
        return None


def train_or_reuse(panel: Panel, config: Any, *, cache: Path | None = None,
                   progress: bool = False, max_seconds: float | None = None,
                   data: dict[str, Any] | None = None, model: str = "lstm") -> QuickModel:
    """The `model` ("lstm" or "lstm_lgbm", forecasting.model_dir) trained on `panel` with
    `config` from the cache, else trained now (on the CPU, one thread) and written there.
    The directory appears whole (trained in a temporary sibling, then renamed), so a
    concurrent or interrupted run never leaves half a model."""
    root = cache or cache_root()
    path = root / _key(panel, config, model)
    version = _read_version(path)
    if version is not None:
        return QuickModel(path, version, True, 0.0, panel.n_series, panel.n_days)
    import torch

    from forecasting.model_dir import save_model_dir, train_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CPU budget is one core's (the machine may be shared)
    try:
        cpu0 = time.process_time()
        result = train_model(model, panel, config, device="cpu", progress=progress,
                             max_seconds=max_seconds, lightgbm_options=QUICK_LIGHTGBM)
        cpu_s = time.process_time() - cpu0
    finally:
        torch.set_num_threads(threads)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".training-", dir=root))
    try:
        save_model_dir(result.forecaster, tmp, data_fingerprint=panel.fingerprint(),
                       data={"n_series": panel.n_series, "n_days": panel.n_days,
                             "first_day": str(panel.dates[0]), "last_day": str(panel.dates[-1]),
                             **(data or {})},
                       metrics={**result.metrics, "train_cpu_s": cpu_s}, history=result.history)
        try:
            tmp.rename(path)
        except OSError:  # another run got there first: use its model
            if _read_version(path) is None:
                raise
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
    version = _read_version(path)
    assert version is not None
    return QuickModel(path, version, False, cpu_s, panel.n_series, panel.n_days)

