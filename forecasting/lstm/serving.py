"""What both LSTM backends compute the same way, in numpy, without torch: the inputs of an
encode and of a one-bucket update, the head's per-origin and year-ago rows, and the
forecast's post-processing (calibration, horizons beyond the trained one).

`forecaster.LSTMForecaster` (torch) and `numpy_forecaster.NumpyLSTMForecaster` run the
network on these; so their numbers differ by float32 rounding only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray

from forecasting._numeric import FloatArray
from forecasting.base import QuantileForecast
from forecasting.calibration import IntervalCalibration
from forecasting.covariates import Covariates
from forecasting.errors import InvalidWindowError
from forecasting.lstm.config import LSTMConfig
from forecasting.lstm.features import (
    N_MONTHS,
    SCALE_FLOOR,
    DayRing,
    ScaleState,
    calendar_features,
    future_features,
    input_features,
    running_scales,
    scale_step,
    year_ago_features,
    year_ago_span,
)
from forecasting.lstm.state import SeriesState
from forecasting.lstm.year_ago import agrees, year_ago_rows

__all__ = ["ONE_DAY", "EncodeInputs", "HeadForecasts", "UpdateInputs", "calendar_row", "day_rows",
           "distinct_days", "encode_inputs", "extend", "finish_forecast", "future_row",
           "head_holiday", "head_promo", "head_rows", "head_scale", "update_inputs",
           "warmup_length", "window_holiday", "window_promo", "yesterday_utc"]

DateArray = NDArray[np.datetime64]
ONE_DAY = np.timedelta64(1, "D")


def yesterday_utc() -> np.datetime64:
    """The last closed daily bucket by the wall clock: the default window end date."""
    return np.datetime64(datetime.now(UTC).date(), "D") - ONE_DAY


@dataclass
class EncodeInputs:
    """An encode's LSTM inputs: feats (n, T, F) float64, each row from column first[i] on
    (first == T: no history), and what the state carries besides h, c."""

    feats: FloatArray
    first: NDArray[np.intp]
    length: int
    scale: ScaleState
    ends: DateArray
    ring: DayRing | None


def encode_inputs(config: LSTMConfig, windows: ArrayLike, end_days: ArrayLike,
                  warmup_days: int | None, log_scale_mean: float,
                  log_scale_std: float, promo: ArrayLike | None = None,
                  holiday: ArrayLike | None = None) -> EncodeInputs:
    """The inputs `encode` runs the LSTM over (see `LSTMForecaster.encode`); `promo` (n, T):
    the windows' days' promotion flags, read with `config.promo_inputs` (None: none);
    `holiday` (n, T): the data's own holiday flags, read with `config.data_holidays` in
    place of the date calendar's (None: no holiday on any day)."""
    arr = np.asarray(windows, dtype=np.float64)
    n, length = arr.shape
    flags = None
    if config.promo_inputs:
        flags = (np.zeros((n, length)) if promo is None
                 else np.broadcast_to(np.asarray(promo, dtype=np.float64), (n, length)))
    own = None
    if config.data_holidays:  # no flags given: no holiday known on any day
        own = (np.zeros((n, length)) if holiday is None
               else np.broadcast_to(np.asarray(holiday, dtype=np.float64), (n, length)))
    warmup = None if warmup_days is None else warmup_length(warmup_days)
    ends = np.broadcast_to(np.asarray(end_days, dtype="datetime64[D]"), (n,)).copy()
    observed = np.isfinite(arr)
    first = np.where(observed.any(axis=1), observed.argmax(axis=1), length)
    ring = DayRing.from_windows(arr) if config.year_ago else None
    # The days before every series' first observation change nothing (scale and state
    # stay zero): cut them before building features (a young SKU's stream window is
    # mostly such days). The same numbers, right-aligned as before.
    lead = int(first.min(initial=length))
    if 0 < lead < length:
        arr, first, length = arr[:, lead:], first - lead, length - lead
        flags = None if flags is None else flags[:, lead:]
        own = None if own is None else own[:, lead:]
    start = 0 if warmup is None else max(0, length - warmup)
    scales, scale_state = running_scales(arr, config.scale_memory)
    if start:  # the LSTM part: the last `length - start` days, right-aligned as before
        first = np.maximum(first, start) - start  # a series seen before starts at once
        arr, scales, length = arr[:, start:], scales[:, start:], length - start
        flags = None if flags is None else flags[:, start:]
        own = None if own is None else own[:, start:]
    distinct, inverse = distinct_days(ends)  # calendar rows once per distinct end day
    offsets = (length - 1 - np.arange(length)).astype("timedelta64[D]")
    cal = calendar_features(distinct[:, None] - offsets[None, :], config.calendar,
                            config.month_inputs)
    cal = cal[np.zeros(n, dtype=np.intp) if inverse is None else inverse]  # a copy
    if own is not None:
        cal[..., -1] = own
    feats = input_features(arr, scales, cal, log_scale_mean, log_scale_std, flags)
    return EncodeInputs(feats, first.astype(np.intp), length, scale_state, ends, ring)


@dataclass
class UpdateInputs:
    """A one-bucket update's LSTM inputs x (n, F) and the rest of the new state; `live`:
    the series with history (the others keep their h, c)."""

    y: FloatArray
    x: FloatArray
    scale: ScaleState
    live: NDArray[np.bool_]
    days: DateArray


def update_inputs(config: LSTMConfig, state: SeriesState, values: ArrayLike,
                  days: ArrayLike | None, log_scale_mean: float,
                  log_scale_std: float, promo: ArrayLike | None = None,
                  holiday: ArrayLike | None = None) -> UpdateInputs:
    """The inputs `update` steps the LSTM on (see `LSTMForecaster.update`); `promo` (n,):
    the new days' promotion flags, read with `config.promo_inputs` (None: none); `holiday`
    (n,): their own holiday flags, read with `config.data_holidays` (None: no holiday)."""
    y = np.asarray(values, dtype=np.float64).reshape(-1)
    n = state.n_series
    if y.shape[0] != n:
        raise InvalidWindowError(f"expected {n} values, got {y.shape[0]}")
    if np.any(y < 0) or np.any(np.isinf(y)):
        raise InvalidWindowError("new bucket values must be finite and >= 0 (or NaN)")
    new_days = (state.last_day + ONE_DAY if days is None
                else np.broadcast_to(np.asarray(days, dtype="datetime64[D]"), (n,)).copy())
    scale = state.scale.copy()
    s = scale_step(scale, y, config.scale_memory)
    live = scale.count > 0
    distinct, inverse = distinct_days(new_days)
    cal = day_rows(distinct, calendar_row, config.calendar,
                   config.month_inputs)  # per distinct day, memoised
    cal = cal[np.zeros(n, dtype=np.intp) if inverse is None else inverse]  # a copy
    if config.data_holidays:  # no flags given: no holiday known
        cal[:, -1] = (0.0 if holiday is None else
                      np.broadcast_to(np.asarray(holiday, dtype=np.float64).reshape(-1), (n,)))
    flags = None
    if config.promo_inputs:
        flags = (np.zeros(n) if promo is None
                 else np.broadcast_to(np.asarray(promo, dtype=np.float64).reshape(-1), (n,)))
    x = input_features(y, s, cal, log_scale_mean, log_scale_std, flags)
    return UpdateInputs(y, x, scale, live, new_days)


def head_promo(config: LSTMConfig, state: SeriesState,
               covariates: Covariates | None) -> FloatArray | None:
    """(n, H) the planned-promotion flags of the H days after each series' last day, as the
    head reads them (`config.promo_inputs`); None: the net reads none, or nothing is planned
    (the head then adds nothing: zero flags)."""
    if not config.promo_inputs or covariates is None:
        return None
    if covariates.n_series != state.n_series:
        raise InvalidWindowError(f"covariates hold {covariates.n_series} series, "
                                 f"the state {state.n_series}")
    flags = covariates.promo_rows(state.last_day + ONE_DAY, config.horizon)
    return flags if flags.any() else None


def window_promo(config: LSTMConfig, covariates: Covariates | None, end_days: ArrayLike,
                 n_series: int, length: int) -> FloatArray | None:
    """(n, length) the promotion flags of the `length` days up to each window's end day
    (`encode`'s `promo`); None: the net reads none, or no covariates."""
    if not config.promo_inputs or covariates is None:
        return None
    return covariates.promo_rows(_window_firsts(covariates, end_days, n_series, length), length)


def _window_firsts(covariates: Covariates, end_days: ArrayLike, n_series: int,
                   length: int) -> NDArray[np.datetime64]:
    """Each window's first day, from its end day and `length` (covariates checked to hold
    the windows' series)."""
    if covariates.n_series != n_series:
        raise InvalidWindowError(f"covariates hold {covariates.n_series} series, "
                                 f"windows {n_series}")
    ends = np.broadcast_to(np.asarray(end_days, dtype="datetime64[D]"), (n_series,))
    # astype: numpy's stubs type datetime64 - timedelta64 as timedelta64
    firsts: NDArray[np.datetime64] = (ends - np.timedelta64(length - 1, "D")).astype(
        "datetime64[D]")
    return firsts


def head_holiday(config: LSTMConfig, state: SeriesState,
                 covariates: Covariates | None) -> FloatArray | None:
    """(n, H) the data's own holiday flags of the H days after each series' last day, as the
    head reads them (`config.data_holidays`; no covariates, or none with a holiday column:
    no holiday known, zeros); None: the net reads the calendar's (no such option)."""
    if not config.data_holidays:
        return None
    if covariates is None or covariates.holiday is None:
        return np.zeros((state.n_series, config.horizon))
    if covariates.n_series != state.n_series:
        raise InvalidWindowError(f"covariates hold {covariates.n_series} series, "
                                 f"the state {state.n_series}")
    return covariates.holiday_rows(state.last_day + ONE_DAY, config.horizon)


def window_holiday(config: LSTMConfig, covariates: Covariates | None, end_days: ArrayLike,
                   n_series: int, length: int) -> FloatArray | None:
    """(n, length) the data's own holiday flags of the `length` days up to each window's
    end day (`encode`'s `holiday`); None: the net reads the calendar's."""
    if not config.data_holidays or covariates is None:
        return None
    return covariates.holiday_rows(_window_firsts(covariates, end_days, n_series, length),
                                   length)


def head_scale(state: SeriesState) -> FloatArray:
    """Each series' output scale (0 without history: it forecasts zero)."""
    live = state.scale.count > 0
    out: FloatArray = np.where(live, np.maximum(state.scale.level, 0.01), 0.0)
    return out


def head_rows(config: LSTMConfig, state: SeriesState,
              holiday: FloatArray | None = None) -> tuple[
        FloatArray, NDArray[np.intp] | None, FloatArray | None]:
    """The head inputs `features.head_inputs` gives, as the packed heads take them: the
    future features of each distinct origin day (and, with the calendar mask, of each day
    with the mask), which of those rows each series has (None: all the first), and the
    per-series year-ago features (None without them)."""
    cfg, big_h = config, config.horizon
    distinct, inverse = distinct_days(state.last_day)
    rows = day_rows(distinct, future_row, cfg.calendar, big_h, cfg.head_calendar,
                    cfg.head_annual, cfg.head_month, cfg.head_month_pairs, cfg.month_inputs)
    if holiday is not None:  # (n, H) the data's own flags: one row per series
        rows = rows[np.zeros(state.n_series, dtype=np.intp) if inverse is None else inverse]
        rows[:, :big_h] = holiday
        inverse = np.arange(state.n_series, dtype=np.intp)
    if state.ring is None:
        if cfg.year_ago:
            raise ValueError("this model's states carry a day ring (year-ago inputs)")
        return rows, inverse, None
    scale = np.maximum(state.scale.level, SCALE_FLOOR)
    weeks = cfg.year_ago_weeks
    gaps = cfg.year_ago_gaps
    if agrees(big_h, weeks, gaps):  # the definition's numbers as matrix products (year_ago.py)
        year = year_ago_rows(state.ring.span(year_ago_span(big_h, weeks), np.float32),
                             scale, state.last_day, big_h, weeks, gaps)
    else:
        year = year_ago_features(state.ring.span(year_ago_span(big_h, weeks)), scale,
                                 state.last_day, big_h, weeks, gaps)
    which = np.zeros(state.n_series, dtype=np.intp) if inverse is None else inverse
    if cfg.year_ago_masks_calendar and cfg.head_calendar:  # see features.head_inputs
        masked = rows.copy()
        masked[:, big_h : 2 * big_h + N_MONTHS] = 0.0
        which = which + rows.shape[0] * (year[:, -1] > 0)
        rows = np.concatenate([rows, masked])
    return rows, which, year


class HeadForecasts:
    """`forecast` and `forecast_known` of both LSTM backends (torch and numpy), from their
    `head_output` and calibration."""

    config: LSTMConfig
    calibration: IntervalCalibration | None
    _levels: FloatArray

    def head_output(self, state: SeriesState, *, integer: bool,
                    promo: FloatArray | None = None,
                    holiday: FloatArray | None = None) -> FloatArray:
        raise NotImplementedError

    @property
    def reads_holidays(self) -> bool:
        """The state reads the data's own holiday flags (`config.data_holidays`)."""
        return bool(self.config.data_holidays)

    def forecast(self, state: SeriesState, horizon: int) -> QuantileForecast:
        """Quantile forecast of the next `horizon` buckets after each series' last bucket
        (no promotion planned, no holiday of the data's own known: `forecast_known` gives
        the known ones)."""
        return self._forecast(state, horizon, None, head_holiday(self.config, state, None))

    def forecast_known(self, state: SeriesState, horizon: int,
                       covariates: Covariates) -> QuantileForecast:
        """`forecast` with the series' planned promotions (read with `config.promo_inputs`)
        and their own holidays (`config.data_holidays`)."""
        return self._forecast(state, horizon, head_promo(self.config, state, covariates),
                              head_holiday(self.config, state, covariates))

    def _forecast(self, state: SeriesState, horizon: int, promo: FloatArray | None,
                  holiday: FloatArray | None = None) -> QuantileForecast:
        integer, cal = self.config.integer_demand, self.calibration
        # With a calibration the head's quantiles stay unrounded until it has moved them.
        out = self.head_output(state, integer=integer and cal is None, promo=promo,
                               holiday=holiday)
        return finish_forecast(out, self._levels, horizon, cal, integer)


def finish_forecast(out: FloatArray, levels: FloatArray, horizon: int,
                    calibration: IntervalCalibration | None,
                    integer: bool) -> QuantileForecast:
    """The forecast of the head's block `out` (n, H, 2Q + 1) (unrounded when there is a
    calibration): calibrated, cut or extended to `horizon` steps."""
    if calibration is not None:
        calibration.apply(out, integer=integer)
    q = levels.size
    big_h = out.shape[1]
    daily, cumulative, mean = out[..., :q], out[..., q : 2 * q], out[..., 2 * q]
    if horizon > big_h:
        daily, cumulative, mean = extend(daily, cumulative, mean, horizon)
        return QuantileForecast(levels, daily[:, :horizon], cumulative[:, :horizon],
                                mean[:, :horizon])
    # Valid by construction: clipped at 0, monotone head, cummax over steps, float64.
    return QuantileForecast.trusted(levels, daily[:, :horizon], cumulative[:, :horizon],
                                    mean[:, :horizon])


def warmup_length(warmup_days: object) -> int:
    """`encode`'s warmup_days as a day count, or a clear error (a positive whole number)."""
    if (isinstance(warmup_days, bool) or not isinstance(warmup_days, int | np.integer)
            or warmup_days < 1):
        raise InvalidWindowError("warmup_days must be a whole number of days >= 1 (or None "
                                 f"for the whole window), got {warmup_days!r}")
    return int(warmup_days)


def day_rows(days: DateArray, row: Callable[..., FloatArray], *args: object) -> FloatArray:
    """Stack `row(day, *args)` for each of `days` (u,): per-day features, memoised."""
    if days.size == 0:  # (0, width): the width comes from any day's row
        return np.stack([row(0, *args)])[:0]
    return np.stack([row(int(d), *args) for d in days.astype(np.int64)])


@lru_cache(maxsize=4096)
def calendar_row(day: int, calendar: str, months: bool = True) -> FloatArray:
    """calendar_features of one day (days since 1970-01-01), read-only. The holiday lookup
    costs ~0.2 ms per call, as much as a 64-series step."""
    out: FloatArray = calendar_features(np.array([day], dtype="datetime64[D]"), calendar,
                                        months)[0]
    out.flags.writeable = False
    return out


@lru_cache(maxsize=4096)
def future_row(day: int, calendar: str, horizon: int, head_calendar: bool,
                annual: bool, month: str = "none", pairs: int = 2,
                months: bool = True) -> FloatArray:
    """future_features of one origin day, read-only."""
    out: FloatArray = future_features(np.array([day], dtype="datetime64[D]"), horizon,
                                      calendar, head_calendar, annual, month, pairs,
                                      months)[0]
    out.flags.writeable = False
    return out


def distinct_days(days: DateArray) -> tuple[DateArray, NDArray[np.intp] | None]:
    """The distinct days of `days` (n,) and which one each entry is (None: all the same day,
    the common case of a batch; np.unique sorts, which costs more than the check)."""
    if days.size == 0 or bool(np.all(days == days[0])):
        return days[:1], None
    distinct, inverse = np.unique(days, return_inverse=True)
    return distinct, inverse.astype(np.intp)


def extend(daily: FloatArray, cumulative: FloatArray, mean: FloatArray,
            horizon: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Beyond the trained horizon H: repeat the last week's daily pattern; cumulative grows by
    the extra mean with spread scaled by sqrt(steps / H) around it (as lead_time_quantile)."""
    big_h = daily.shape[1]
    period = min(7, big_h)
    src = big_h - period + (np.arange(big_h, horizon) - big_h) % period
    daily = np.concatenate([daily, daily[:, src]], axis=1)
    mean = np.concatenate([mean, mean[:, src]], axis=1)
    total = np.cumsum(mean, axis=1)
    m_h = total[:, big_h - 1, None]
    ratio = (np.arange(big_h + 1, horizon + 1) / big_h)[None, :, None]
    extra_mean = total[:, big_h:, None]
    spread = cumulative[:, big_h - 1, None, :] - m_h[:, :, None]
    ext = np.maximum(extra_mean + np.sqrt(ratio) * spread, 0.0)
    cumulative = np.maximum.accumulate(np.concatenate([cumulative, ext], axis=1), axis=1)
    return daily, cumulative, mean
