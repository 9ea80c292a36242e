"""Retraining from the system's own demand: the panel built from recorded buckets, the
backtest protocol both champion and challenger face, the challenger's training, and the
atomic swap of a model directory (what `shelfcast retrain` is made of).

The protocol: the last `folds` origins, `step` days apart, the last one `horizon` days before
the panel's end (`forecasting.backtest.rolling_origin`). The challenger is trained once on
the demand before the first origin (so every fold is out of sample for it) and the champion,
the model that is serving, forecasts the same folds unchanged; both are then frozen models to
the backtest, scored on the same windows. What was backtested is what gets promoted. The
champion may have been trained on days inside the folds: that favours the champion, so a
promotion is never bought with leaked data.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from forecasting._numeric import FloatArray
from forecasting.base import Forecaster, QuantileForecast
from forecasting.data import Panel
from forecasting.errors import ForecastingError
from forecasting.promotion import ModelScores

if TYPE_CHECKING:
    from forecasting.lstm import LSTMConfig
    from forecasting.model_dir import TrainedModel

__all__ = [
    "DAILY_BUCKET_SECONDS",
    "BacktestProtocol",
    "RetrainError",
    "backtest_pair",
    "load_champion",
    "panel_from_rows",
    "replace_directory",
    "staging_directory",
    "train_challenger",
]

DAILY_BUCKET_SECONDS = 86_400


class RetrainError(ForecastingError):
    """Retraining cannot run as asked: no or too little history, an unreadable champion, a
    model directory that cannot be swapped."""


def panel_from_rows(keys: Sequence[str], series: ArrayLike, days: ArrayLike,
                    quantities: ArrayLike) -> Panel:
    """A daily Panel from recorded buckets: row `series[i]` (an index into `keys`) had
    `quantities[i]` units on day `days[i]` (days since 1970-01-01, UTC).

    Read as the worker reads its own window (streams.state.SkuState.closed_window): a series
    has no history (NaN) before its first recorded bucket; a day after it without a row is a
    day without demand (0); net returns below 0 count as 0; duplicate rows are summed.
    """
    idx = np.asarray(series, dtype=np.intp)
    day = np.asarray(days, dtype=np.int64)
    qty = np.asarray(quantities, dtype=np.float64)
    if not idx.size:
        raise RetrainError("no demand recorded: demand_history is empty")
    if not idx.shape == day.shape == qty.shape:
        raise ValueError("series, days and quantities must have one entry per row")
    if idx.min() < 0 or idx.max() >= len(keys):
        raise ValueError("series index out of range of keys")
    first_day, last_day = int(day.min()), int(day.max())
    n_days = last_day - first_day + 1
    values = np.zeros((len(keys), n_days))
    np.add.at(values, (idx, day - first_day), np.where(np.isfinite(qty), qty, 0.0))
    values = np.maximum(values, 0.0)
    started = np.full(len(keys), n_days, dtype=np.int64)
    np.minimum.at(started, idx, day - first_day)
    values[np.arange(n_days)[None, :] < started[:, None]] = np.nan
    return Panel(tuple(keys), np.datetime64(first_day, "D"), values)


@dataclass(frozen=True)
class BacktestProtocol:
    """Where champion and challenger are compared: `folds` origins `step` days apart (default
    `horizon`), each forecasting `horizon` days; the challenger trains on the days before the
    first origin, keeping its last `val_days` for early stopping and calibration."""

    horizon: int = 14
    folds: int = 2
    step: int | None = None
    val_days: int = 28
    season: int = 7

    def __post_init__(self) -> None:
        if self.horizon < 1 or self.folds < 1 or (self.step is not None and self.step < 1):
            raise RetrainError(f"need horizon, folds and step >= 1, got horizon={self.horizon}"
                               f", folds={self.folds}, step={self.step}")

    @property
    def step_days(self) -> int:
        """Days between origins."""
        return self.step or self.horizon

    @property
    def eval_days(self) -> int:
        """Days from the first origin to the panel's end."""
        return self.horizon + (self.folds - 1) * self.step_days

    @property
    def min_days(self) -> int:
        """The shortest panel the protocol runs on: a training span the LSTM accepts
        (`val_days + 2 * horizon + 1`) and a seasonal-naive MASE scale before the first
        origin, then the folds."""
        train = max(self.val_days + 2 * self.horizon + 1, 2 * self.season + 1)
        return train + self.eval_days

    def first_origin(self, n_days: int) -> int:
        """Column of the first origin's first forecast day in a panel of `n_days` days."""
        return n_days - self.eval_days

    def check(self, panel: Panel) -> None:
        """A one-line RetrainError when `panel` is too short for the protocol."""
        if panel.n_days < self.min_days:
            raise RetrainError(
                f"too little history: {panel.n_days} days recorded "
                f"({panel.dates[0]} .. {panel.dates[-1]}), the protocol needs {self.min_days} "
                f"({self.folds} fold(s) of {self.horizon} days after at least "
                f"{self.min_days - self.eval_days} days to train on, {self.val_days} of them "
                "for validation)")

    def to_json(self, panel: Panel) -> dict[str, Any]:
        """The protocol as recorded next to a decision, with the origins' dates."""
        first = self.first_origin(panel.n_days)
        origins = [first + k * self.step_days for k in range(self.folds)]
        return {"horizon": self.horizon, "folds": self.folds, "step": self.step_days,
                "val_days": self.val_days, "train_days": first,
                "origins": [str(panel.dates[c]) for c in origins]}


class _Frozen(Forecaster):
    """A trained model as the backtest must see it: never refitted (fits = False), its
    forecasts passed through unchanged."""

    name = "frozen"

    def __init__(self, model: Forecaster) -> None:
        super().__init__(model.levels.tolist())
        self.model = model

    @property
    def model_version(self) -> str:
        return self.model.model_version

    def _predict(self, windows: FloatArray, horizon: int,
                 end_days: ArrayLike | None) -> QuantileForecast:
        return self.model.predict(windows, horizon, end_days=end_days)


FoldCallback = Callable[[str, int, dict[str, float]], None]


def backtest_pair(panel: Panel, protocol: BacktestProtocol, models: dict[str, Forecaster],
                  on_fold: FoldCallback | None = None) -> dict[str, ModelScores]:
    """Score each trained model (by role, e.g. "champion", "challenger") on the protocol's
    folds of `panel` with `forecasting.backtest.rolling_origin`, none of them refitted."""
    from forecasting.backtest import rolling_origin

    frozen = {role: _Frozen(model) for role, model in models.items()}
    result = rolling_origin(panel, list(frozen), horizon=protocol.horizon,
                            folds=protocol.folds, step=protocol.step_days,
                            season=protocol.season, refit=False,
                            factory=lambda role: frozen[role], on_fold=on_fold)
    return {role: ModelScores.from_mapping(result.models[role]) for role in frozen}


def train_challenger(panel: Panel, protocol: BacktestProtocol, config: LSTMConfig, *,
                     device: str = "auto", max_seconds: float | None = None,
                     progress: bool = False,
                     on_epoch: Callable[[int, float, float], None] | None = None,
                     model: str = "lstm") -> TrainedModel:
    """`model` (the LSTM or `lstm_lgbm`, forecasting.model_dir) trained on the days of
    `panel` before the protocol's first origin (its last `protocol.val_days` of them for
    early stopping and the combination's weights); `max_seconds` caps the LSTM's training."""
    import dataclasses

    from forecasting.model_dir import train_model

    protocol.check(panel)
    history = panel.head(protocol.first_origin(panel.n_days))
    cfg = dataclasses.replace(config, horizon=max(config.horizon, protocol.horizon),
                              val_days=protocol.val_days)
    return train_model(model, history, cfg, device=device, progress=progress,
                       on_epoch=on_epoch, max_seconds=max_seconds)


def load_champion(model_dir: Path, *, device: str = "cpu") -> Forecaster | None:
    """The model serving from `model_dir`, or None when there is none yet (the directory is
    missing or empty). A directory holding something that is not a readable model is a
    RetrainError: a broken champion must be looked at, not silently replaced. It is loaded on
    torch, the backend the challenger is trained and scored on, so the two are compared on
    the same arithmetic (numpy serving differs in float32 rounding)."""
    if not model_dir.exists() or (model_dir.is_dir() and not any(model_dir.iterdir())):
        return None
    from forecasting.model_dir import load_model_dir

    try:
        return load_model_dir(model_dir, device=device, backend="torch")
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise RetrainError(f"the model directory {model_dir} holds no readable model ({exc}); "
                           "move it away to start without a champion") from None


# renameat2(2) flag: swap two paths in one step (Linux >= 3.15, glibc >= 2.28).
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap the paths `a` and `b` atomically; False where the platform or file system
    cannot (the caller then falls back to two renames)."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def staging_directory(target: Path) -> Path:
    """A fresh directory next to `target` (same file system, so it can be renamed onto it)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}.staging-{uuid.uuid4().hex[:8]}")
    staged.mkdir()
    return staged


def replace_directory(staged: Path, target: Path, *, keep_previous: bool = True) -> Path | None:
    """Make the complete directory `staged` appear at `target` in one step, so a reader of
    `target` (a worker polling SHELFCAST_MODEL_PATH) sees the old model or the new one, never
    a mix. The replaced directory is kept as `<target>.previous` (a rollback is two `mv`s),
    whose path is returned; None when nothing was replaced.

    An existing `target` is swapped with renameat2(RENAME_EXCHANGE); where that is missing,
    by two renames (for an instant `target` is absent, which a polling worker skips).
    `target` must not be a mount point: mount the volume at its parent.
    """
    previous = target.with_name(f"{target.name}.previous")
    try:
        if not target.exists() and not target.is_symlink():
            os.rename(staged, target)
            return None
        if not _exchange(staged, target):
            aside = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(target, aside)
            os.rename(staged, target)
            staged = aside
    except OSError as exc:
        if exc.errno in (errno.EBUSY, errno.EXDEV):
            raise RetrainError(f"cannot replace {target} ({exc.strerror}): is it a mount "
                               "point? mount the volume at its parent and point "
                               "SHELFCAST_MODEL_PATH at a directory inside it") from None
        raise
    if not keep_previous:
        shutil.rmtree(staged, ignore_errors=True)
        return None
    if previous.exists():
        shutil.rmtree(previous)
    os.rename(staged, previous)
    return previous

