"""The forecaster contract: QuantileForecast (what every model returns), the Forecaster ABC and
the optional IncrementalForecaster (carried per-series state)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Generic, Protocol, Self, TypeVar, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from forecasting._numeric import FloatArray
from forecasting.covariates import Covariates
from forecasting.data import Panel
from forecasting.errors import InvalidForecastError, InvalidWindowError
from forecasting.quantiles import quantile_at

__all__ = [
    "QUANTILE_LEVELS",
    "Forecaster",
    "IncrementalForecaster",
    "KeyedStates",
    "QuantileForecast",
    "validate_levels",
    "yesterday",
]

QUANTILE_LEVELS: tuple[float, ...] = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975)
"""Default quantile levels: the central 50/80/90/95% intervals and the median."""

SeriesIndex = int | slice | Sequence[int] | NDArray[np.integer] | NDArray[np.bool_] | None


def validate_levels(levels: ArrayLike) -> FloatArray:
    """Return `levels` as a float array; they must be strictly increasing and inside (0, 1)."""
    arr = np.array(levels, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise InvalidForecastError(
            f"levels must be a non-empty 1-D sequence, got shape {arr.shape}"
        )
    if not (np.all(arr > 0.0) and np.all(arr < 1.0)):
        raise InvalidForecastError(f"levels must lie strictly inside (0, 1), got {arr.tolist()}")
    if np.any(np.diff(arr) <= 0.0):
        raise InvalidForecastError(f"levels must be strictly increasing, got {arr.tolist()}")
    return arr


def _frozen(arr: FloatArray) -> FloatArray:
    arr.flags.writeable = False
    return arr


def _interp_level(values: FloatArray, levels: FloatArray, level: float) -> FloatArray:
    """Linear interpolation in `level` along the last axis of `values`; clamped at the ends."""
    return quantile_at(values, levels, level)


@dataclass(frozen=True)
class QuantileForecast:
    """Probabilistic multi-horizon demand forecast for a batch of series.

    Attributes:
        levels: (Q,) quantile levels, strictly increasing in (0, 1).
        daily: (n_series, horizon, Q) quantiles of demand in each future bucket h = 1..horizon
            (index h - 1). "daily" is the default bucket; hourly buckets work the same.
        cumulative: (n_series, horizon, Q) quantiles of the TOTAL demand over buckets 1..h;
            cumulative[:, h - 1, :] is the lead-time demand distribution for an h-bucket lead
            time. It is not the sum of daily quantiles (quantiles do not add).
        mean: (n_series, horizon) the model's point forecast (expected demand) per bucket.

    Arrays are copied to float64 and made read-only. Quantiles must be finite, non-negative
    and non-decreasing along Q.
    """

    levels: FloatArray
    daily: FloatArray
    cumulative: FloatArray
    mean: FloatArray

    def __post_init__(self) -> None:
        levels = validate_levels(self.levels)
        daily = np.array(self.daily, dtype=np.float64)
        cumulative = np.array(self.cumulative, dtype=np.float64)
        mean = np.array(self.mean, dtype=np.float64)
        q = levels.shape[0]
        if daily.ndim != 3 or daily.shape[2] != q:
            raise InvalidForecastError(f"daily must be (n_series, horizon, {q}), got {daily.shape}")
        n, horizon, _ = daily.shape
        if horizon < 1:
            raise InvalidForecastError("horizon must be at least 1")
        if cumulative.shape != daily.shape:
            raise InvalidForecastError(
                f"cumulative must have the shape of daily {daily.shape}, got {cumulative.shape}"
            )
        if mean.shape != (n, horizon):
            raise InvalidForecastError(f"mean must be {(n, horizon)}, got {mean.shape}")
        for field, arr in (("daily", daily), ("cumulative", cumulative), ("mean", mean)):
            if not np.all(np.isfinite(arr)):
                raise InvalidForecastError(f"{field} holds NaN or infinite values")
            if np.any(arr < 0.0):
                raise InvalidForecastError(f"{field} holds negative demand (min {arr.min()})")
        for field, arr in (("daily", daily), ("cumulative", cumulative)):
            if arr.size == 0:
                continue
            tol = 1e-9 * max(1.0, float(np.abs(arr).max()))
            if np.any(np.diff(arr, axis=2) < -tol):
                raise InvalidForecastError(f"{field} quantiles decrease along the level axis")
        object.__setattr__(self, "levels", _frozen(levels))
        object.__setattr__(self, "daily", _frozen(daily))
        object.__setattr__(self, "cumulative", _frozen(cumulative))
        object.__setattr__(self, "mean", _frozen(mean))

    @classmethod
    def trusted(cls, levels: FloatArray, daily: FloatArray, cumulative: FloatArray,
                mean: FloatArray) -> Self:
        """Wrap arrays that already hold every invariant, without copying or checking.

        For models whose output is valid by construction (clipped at 0, sorted along Q,
        float64, finite) and for slices of a validated forecast: on a 16k-series batch the
        checks of the normal constructor cost as much as the network's head. The arrays are
        made read-only; the caller must not keep writable views of them.
        """
        out = object.__new__(cls)
        for name, arr in (("levels", levels), ("daily", daily), ("cumulative", cumulative),
                          ("mean", mean)):
            view = arr.view()
            view.flags.writeable = False
            object.__setattr__(out, name, view)
        return out

    @property
    def n_series(self) -> int:
        """Number of series in the batch."""
        return int(self.daily.shape[0])

    @property
    def horizon(self) -> int:
        """Number of future buckets forecast."""
        return int(self.daily.shape[1])

    @classmethod
    def zeros(cls, n_series: int, horizon: int, levels: ArrayLike = QUANTILE_LEVELS) -> Self:
        """A forecast of zero demand with zero spread (series without any history)."""
        lv = validate_levels(levels)
        shape = (n_series, horizon, lv.shape[0])
        return cls(lv, np.zeros(shape), np.zeros(shape), np.zeros((n_series, horizon)))

    @overload
    def lead_time_quantile(self, series_index: int, steps: int, level: float) -> float: ...

    @overload
    def lead_time_quantile(
        self,
        series_index: slice | Sequence[int] | NDArray[np.integer] | NDArray[np.bool_] | None,
        steps: int,
        level: float,
    ) -> FloatArray: ...

    def lead_time_quantile(
        self, series_index: SeriesIndex, steps: int, level: float
    ) -> float | FloatArray:
        """Quantile `level` of the total demand over the next `steps` buckets.

        `series_index` picks the series: an int gives a float, anything that indexes the first
        axis (slice, index array, boolean mask) gives an array, None gives all series.

        Levels between the forecast's levels are interpolated linearly in the level; levels
        outside them are clamped to the first/last level (no tail extrapolation). steps == 0
        gives 0. For steps > horizon the distribution at the horizon H is extrapolated:
        with M_H = sum(mean[:, :H]) and r = steps / H,

            Q_steps(q) = max(0, r * M_H + sqrt(r) * (Q_H(q) - M_H)),

        i.e. the mean grows by the average per-bucket mean for each extra bucket and the spread
        around the mean grows like sqrt(steps), as for a sum of independent buckets.
        """
        if not 0.0 <= level <= 1.0:
            raise ValueError(f"level must be in [0, 1], got {level}")
        if steps < 0 or int(steps) != steps:
            raise ValueError(f"steps must be a non-negative integer, got {steps}")
        steps = int(steps)
        rows = slice(None) if series_index is None else series_index
        cumulative = self.cumulative[rows]
        if steps == 0:
            values: FloatArray = np.zeros(cumulative.shape[:-2] + cumulative.shape[-1:])
        elif steps <= self.horizon:
            values = cumulative[..., steps - 1, :]
        else:
            total_mean = self.mean[rows].sum(axis=-1)[..., None]
            ratio = steps / self.horizon
            values = np.maximum(
                ratio * total_mean
                + math.sqrt(ratio) * (cumulative[..., self.horizon - 1, :] - total_mean),
                0.0,
            )
        out = _interp_level(values, self.levels, level)
        if isinstance(series_index, int | np.integer):
            return float(out)
        return np.asarray(out, dtype=np.float64)


def yesterday() -> np.datetime64:
    """The last closed daily bucket by numpy's clock: the default end date of a window."""
    return np.datetime64("today", "D") - np.timedelta64(1, "D")


class Forecaster(ABC):
    """What every demand model speaks: `fit(panel)` on history, `predict` quantiles for a batch.

    Like River's forecaster base the surface is tiny, so the backtest, the stream, the
    simulation and the benchmark never special-case a model:

    - `fit(panel)`: learn from a `forecasting.data.Panel` (many series on one date grid, so a
      model that reads the calendar knows which day each column is). Local models (the
      baselines, ETS, which fits each window when it forecasts) keep nothing: a no-op.
    - `predict(windows, horizon, *, end_days=None)`: forecast each row of `windows`;
      `end_days` are the dates of the windows' last buckets ((n,) dates or one date), which
      models with calendar features read and the others ignore. None: `end_day()`, the
      model's clock (default: yesterday).
    - `fits`: a global model that `fit` trains; `needs_fit`: whether `predict` still waits
      for `fit` (an untrained global model); `fit_metrics`: what the last fit reported.
    - `cap_threads(n)`: cap the threads of the model's compute runtime (torch, BLAS,
      LightGBM's predict); a no-op for numpy models. `prepare_serving()`: what a worker calls
      once on the model it loads to serve (LightGBM's boosters compile); a no-op by default.

    Subclasses set `name` (the registry key), bump `version` when their output changes, and
    implement `_predict` on windows that `predict` has already validated: a float64
    (n_series, window_len) array of bucket demands, oldest first, values >= 0 or NaN. Leading
    NaNs mean "no history yet" (a new SKU); NaNs inside the history are missing buckets and
    are skipped.
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1
    model_id: str | None = None  # the artifact's id, for a model loaded from (or saved to) one
    # Reads known-in-advance covariates (`predict(..., covariates=)`, `Panel.covariates`).
    uses_covariates: ClassVar[bool] = False
    # A global model, learned from many series at once: `fit(panel)` trains it. False: a
    # local model, whose `fit` keeps nothing (it reads each window when it forecasts).
    fits: ClassVar[bool] = False

    def __init__(self, levels: Sequence[float] = QUANTILE_LEVELS, *,
                 end_day: Callable[[], np.datetime64] = yesterday) -> None:
        self._levels = validate_levels(levels)
        self.end_day = end_day

    @property
    def levels(self) -> FloatArray:
        """Quantile levels this forecaster emits."""
        return self._levels.copy()

    @property
    def model_version(self) -> str:
        """Identifier written into ForecastEvent.model_version, e.g. "seasonal_naive-1"; a
        model loaded from an artifact adds the artifact's id, e.g. "lstm-1+3f2a9c01"."""
        base = f"{self.name}-{self.version}"
        return f"{base}+{self.model_id}" if self.model_id else base

    @property
    def needs_fit(self) -> bool:
        """True while `predict` needs `fit(panel)` first; local models never do."""
        return False

    @property
    def fit_metrics(self) -> dict[str, float]:
        """What the last `fit` reported (rows, epochs, losses, seconds); empty when it has
        not fitted or fits nothing."""
        return {}

    def fit(self, panel: Panel) -> Self:
        """Fit on every series of `panel` (all its days are history); a no-op for models
        that keep nothing between forecasts."""
        return self

    def cap_threads(self, threads: int) -> None:
        """Cap the intra-op threads of the model's compute runtime; numpy models have none."""
        return None

    def prepare_serving(self) -> None:
        """Get ready to serve many small calls for a long time (the stream's loaded model:
        e.g. compile what compiles, `forecasting.compiled_trees`); a no-op by default. A
        backtest or a one-off load does not call it."""
        return None

    def window_ends(self, end_days: ArrayLike | None) -> ArrayLike:
        """The windows' end dates: `end_days` as given, or the model's clock when None."""
        return self.end_day() if end_days is None else end_days

    def predict(self, windows: ArrayLike, horizon: int, *,
                end_days: ArrayLike | None = None,
                covariates: Covariates | None = None) -> QuantileForecast:
        """Forecast `horizon` buckets for each row of `windows` (n_series, window_len) whose
        last buckets fall on `end_days` ((n,) dates or one date; None: `end_day()`).

        `covariates`: known-in-advance covariates of the same rows (planned promotions,
        price ratio) on a grid that covers the forecast days; models that use none
        (`uses_covariates` False) ignore them, and None means nothing planned.
        Rows with no observation at all get zero demand with zero spread.
        """
        if isinstance(horizon, bool) or int(horizon) != horizon or horizon < 1:
            raise InvalidWindowError(f"horizon must be a positive integer, got {horizon!r}")
        horizon = int(horizon)
        arr = np.array(windows, dtype=np.float64)
        if arr.ndim != 2:
            raise InvalidWindowError(
                f"windows must be 2-D (n_series, window_len), got shape {arr.shape}"
            )
        if np.any(np.isinf(arr)):
            raise InvalidWindowError("windows hold infinite values")
        if np.any(arr < 0.0):  # NaN compares False, so missing buckets pass
            bad = np.argwhere(arr < 0.0)[0]
            raise InvalidWindowError(
                f"windows hold negative demand, e.g. series {bad[0]} bucket {bad[1]}: "
                f"{arr[bad[0], bad[1]]}"
            )
        if arr.shape[0] == 0 or arr.shape[1] == 0:
            return QuantileForecast.zeros(arr.shape[0], horizon, self._levels)
        if covariates is not None and self.uses_covariates:
            if covariates.n_series != arr.shape[0]:
                raise InvalidWindowError(f"covariates hold {covariates.n_series} series, "
                                         f"windows {arr.shape[0]}")
            return self._predict_known(arr, horizon, end_days, covariates)
        return self._predict(arr, horizon, end_days)

    def forecast_one(self, window: ArrayLike, horizon: int, *,
                     end_day: ArrayLike | None = None) -> QuantileForecast:
        """Forecast a single series; `window` is 1-D, oldest bucket first."""
        arr = np.array(window, dtype=np.float64)
        if arr.ndim != 1:
            raise InvalidWindowError(f"window must be 1-D, got shape {arr.shape}")
        return self.predict(arr[None, :], horizon, end_days=end_day)

    @abstractmethod
    def _predict(self, windows: FloatArray, horizon: int,
                 end_days: ArrayLike | None) -> QuantileForecast:
        """Forecast validated, non-empty windows (see the class docstring); `end_days` as
        given to `predict` (None: the caller gave none; `window_ends` resolves it)."""

    def _predict_known(self, windows: FloatArray, horizon: int, end_days: ArrayLike | None,
                       covariates: Covariates) -> QuantileForecast:
        """`_predict` with known-in-advance covariates; models with `uses_covariates`
        override it."""
        return self._predict(windows, horizon, end_days)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(levels={self._levels.tolist()})"


StateT = TypeVar("StateT")


class KeyedStates(Protocol[StateT]):
    """A store of carried states by series key (e.g. `forecasting.lstm.slots.StateSlots`):
    what the inferencer keeps between batches for an IncrementalForecaster."""

    @property
    def last_day(self) -> NDArray[np.datetime64]:
        """(slots,) the date of the last bucket folded into each slot's state."""
        ...

    def slots(self, keys: Sequence[str]) -> tuple[NDArray[np.intp], NDArray[np.bool_]]:
        """(slot of each key, whether it was new), making slots for unknown keys."""
        ...

    def gather(self, slots: NDArray[np.intp]) -> StateT:
        """The states held in `slots`, as one batch."""
        ...

    def scatter(self, slots: NDArray[np.intp], state: StateT) -> None:
        """Store the batch `state` into `slots`."""
        ...

    def export(self, slots: NDArray[np.intp]) -> list[bytes]:
        """The durable record of each slot's state (what a stream changelogs per key)."""
        ...

    def restore(self, slots: NDArray[np.intp], blobs: Sequence[bytes | None]
                ) -> NDArray[np.bool_]:
        """Put records made by `export` of this model into `slots`; returns which were taken
        (a record of another model or layout is not)."""
        ...

    def history(self, blobs: Sequence[bytes | None]
                ) -> tuple[NDArray[np.float64], NDArray[np.datetime64]]:
        """The demand history records of any model of this kind carry: (n, days) values,
        oldest first, NaN where none, and (n,) the day of the last column (NaT: none)."""
        ...


class IncrementalForecaster(Forecaster, Generic[StateT]):
    """A forecaster that can also carry each series' state from bucket to bucket (the LSTM),
    so a stream pays one step per new bucket instead of re-reading the window.

    - `encode(windows, end_days, warmup_days=None, *, holiday=None)`: the state after each
      window;
    - `update(state, values, days=None, *, consume=False, holiday=None)`: fold one new
      bucket per series;
    - `reads_holidays`: whether `holiday` flags change the state (the data's own holidays);
    - `forecast(state, horizon)`: what `predict` would give for the windows behind `state`;
    - `keyed_states(max_states)`: an empty store for states by series key;
    - `cold_start_warmup_days`: how many days a cold start (an unknown or stale key) is
      encoded over; None: the whole window.

    Optional: the inferencer checks for it once, when it is given a model.
    """

    cold_start_warmup_days: ClassVar[int | None] = None

    @abstractmethod
    def encode(self, windows: ArrayLike, end_days: ArrayLike,
               warmup_days: int | None = None, *, holiday: ArrayLike | None = None) -> StateT:
        """The state after each window (n, T) ending on `end_days` ((n,) or one date);
        `holiday` (n, T): the windows' days' own holiday flags, for a model that reads them
        (`reads_holidays`; None: no holiday known)."""

    @abstractmethod
    def update(self, state: StateT, values: ArrayLike, days: ArrayLike | None = None, *,
               consume: bool = False, holiday: ArrayLike | None = None) -> StateT:
        """Fold one new bucket per series into `state` (`consume`: the caller drops it;
        `holiday` (n,): the new days' own holiday flags, as `encode` reads them)."""

    @property
    def reads_holidays(self) -> bool:
        """True when the carried state reads each day's own holiday flag (`encode` and
        `update`'s `holiday`): a caller with a holiday calendar passes the flags."""
        return False

    @abstractmethod
    def forecast(self, state: StateT, horizon: int) -> QuantileForecast:
        """Forecast the next `horizon` buckets after each series' last bucket."""

    def forecast_known(self, state: StateT, horizon: int,
                       covariates: Covariates) -> QuantileForecast:
        """`forecast` with the series' known-in-advance covariates (rows of `state`); a
        model that reads none (`uses_covariates` False) forecasts as without them."""
        return self.forecast(state, horizon)

    @abstractmethod
    def keyed_states(self, max_states: int) -> KeyedStates[StateT]:
        """An empty store for at most `max_states` states of this model, by series key."""

    def _predict(self, windows: FloatArray, horizon: int,
                 end_days: ArrayLike | None) -> QuantileForecast:
        """`predict` is the forecast from the state after each window."""
        return self.forecast(self.encode(windows, self.window_ends(end_days)), horizon)
