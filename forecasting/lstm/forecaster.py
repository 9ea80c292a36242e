"""LSTMForecaster: the global LSTM behind the Forecaster contract, full-window or incremental."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from forecasting._numeric import FloatArray
from forecasting.base import DatedForecaster, QuantileForecast
from forecasting.errors import InvalidWindowError
from forecasting.lstm.calibration import IntervalCalibration
from forecasting.lstm.features import (
    N_MONTHS,
    SCALE_FLOOR,
    DayRing,
    ScaleState,
    calendar_features,
    future_features,
    head_inputs,
    input_features,
    running_scales,
    scale_step,
    year_ago_features,
    year_ago_span,
)
from forecasting.lstm.kernels import PackedNet, reference_quantiles
from forecasting.lstm.model import LSTMConfig, LSTMNet
from forecasting.lstm.year_ago import agrees, year_ago_rows

if TYPE_CHECKING:
    from forecasting.data import Panel

__all__ = ["LSTMForecaster", "SeriesState", "auto_device", "yesterday_utc"]

DateArray = NDArray[np.datetime64]
ONE_DAY = np.timedelta64(1, "D")
_LOOP_MIN_ROWS = 512  # from this many series on, encode steps PackedNet on CPU (see encode)


def auto_device(requested: str = "auto") -> torch.device:
    """CUDA when available (or asked for), else CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def yesterday_utc() -> np.datetime64:
    """The last closed daily bucket by the wall clock: the default window end date."""
    return np.datetime64(datetime.now(UTC).date(), "D") - ONE_DAY


@dataclass
class SeriesState:
    """What the LSTM carries per series between buckets (a batch of series).

    h, c: (layers, n, hidden) float32 recurrent state after the last bucket seen.
    scale: running demand level and observation count (see features.ScaleState).
    last_day: (n,) date of the last bucket folded in.
    ring: the last features.RING_DAYS bucket values, for the year-ago features (None when
    the model does not use them); from a `slots.StateSlots` store, a view of its rows.
    A series with count 0 has no history yet: its h, c are zeros and it forecasts zero.
    """

    h: torch.Tensor
    c: torch.Tensor
    scale: ScaleState
    last_day: DateArray
    ring: DayRing | None = None

    @property
    def n_series(self) -> int:
        """Number of series in the batch."""
        return int(self.scale.count.shape[0])

    def take(self, rows: NDArray[np.intp] | Sequence[int]) -> SeriesState:
        """The states of series `rows` (a copy)."""
        idx = np.asarray(rows, dtype=np.intp)
        t_idx = torch.as_tensor(idx, device=self.h.device)
        return SeriesState(
            self.h[:, t_idx].clone(), self.c[:, t_idx].clone(),
            ScaleState(self.scale.level[idx].copy(), self.scale.count[idx].copy()),
            self.last_day[idx].copy(),
            None if self.ring is None else self.ring.take(idx),
        )


class LSTMForecaster(DatedForecaster):
    """One global LSTM for all series, probabilistic over a direct multi-horizon head.

    Each series is run from its first observed bucket (leading NaNs = no history) to the end
    of its window; a running per-series scale normalises inputs and outputs, calendar
    features (weekday, month, UK holidays/closures) say which day each bucket is. The state
    after the last bucket feeds a head that emits daily and cumulative quantiles and the
    mean for the next `config.horizon` buckets at once; longer horizons repeat the last week
    and widen the cumulative spread like sqrt(steps).

    `predict(windows, horizon)` is the Forecaster contract: windows end at `end_day()`
    (default: yesterday, UTC). `predict_at` takes explicit end dates. The incremental path —
    `encode`, `update` (one bucket, O(1) per series) and `forecast` — gives the same numbers
    as a full recompute.
    """

    name = "lstm"
    version = 1
    # Days a cold start (the keyed inferencer's unknown, stale or re-versioned keys) runs
    # the LSTM over: `encode(..., warmup_days=this)`. None: the whole window. 182: the
    # shortest measured warm-up that moved no series' forecast by more than 0.5% at any
    # of 48 UCI and 56 store-item origins; shorter ones threw single intermittent UCI
    # series hundreds of times off (91 at 15 of 48 origins). benchmarks/README.md,
    # "Full window with bounded warm-up".
    cold_start_warmup_days: int | None = 182

    def __init__(
        self,
        net: LSTMNet,
        *,
        log_scale_mean: float = 0.0,
        log_scale_std: float = 1.0,
        model_id: str | None = None,
        device: str | torch.device = "auto",
        end_day: Callable[[], np.datetime64] = yesterday_utc,
        calibration: IntervalCalibration | None = None,
    ) -> None:
        super().__init__(net.config.levels)
        self.config: LSTMConfig = net.config
        self.device = device if isinstance(device, torch.device) else auto_device(device)
        self.net = net.to(self.device).eval()
        self.log_scale_mean = float(log_scale_mean)
        self.log_scale_std = float(log_scale_std)
        self.model_id = model_id
        self.end_day = end_day
        self.train_result: Any = None  # TrainResult of the last fit, if any
        self._packed_net: PackedNet | None = None
        # Learned on the training's validation origins (calibration.py); None: raw quantiles.
        self.calibration = calibration

    @property
    def model_version(self) -> str:
        """"lstm-1" plus the artifact's id when loaded from one, e.g. "lstm-1+3f2a9c01"."""
        base = f"{self.name}-{self.version}"
        return f"{base}+{self.model_id}" if self.model_id else base

    # --- fitting ---------------------------------------------------------------------------
    def fit(self, series: Sequence[NDArray[np.floating]]) -> Self:
        """Train on histories that all end at `end_day()` (right-aligned, NaN-padded)."""
        from forecasting.data import Panel

        return self.fit_panel(Panel.from_histories(series, self.end_day()))

    def fit_panel(self, panel: Panel, *, progress: bool = False) -> Self:
        """Train a fresh network with this model's config on `panel`; replaces the weights."""
        from forecasting.lstm.training import train_lstm

        result = train_lstm(panel, self.config, device=str(self.device), progress=progress)
        fitted = result.forecaster
        self.net = fitted.net.to(self.device).eval()
        self.config = fitted.config
        self.log_scale_mean, self.log_scale_std = fitted.log_scale_mean, fitted.log_scale_std
        self.calibration = fitted.calibration
        self.model_id = None
        self.train_result = result
        return self

    # --- tensors ---------------------------------------------------------------------------
    def _tensor(self, arr: NDArray[np.floating]) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t

    # --- full recompute --------------------------------------------------------------------
    def encode(self, windows: ArrayLike, end_days: ArrayLike,
               warmup_days: int | None = None) -> SeriesState:
        """Run each window (n, T) from its first observation to its end date (n,) or ().

        `warmup_days` None: the LSTM sees the whole window (exact: the state `update`
        reaches bucket by bucket; O(T) recurrent steps per series). An int W >= 1 bounds the
        cold start to O(min(W, T)) steps: the LSTM starts from a zero state W days before
        the end (at the series' first observation, if later), on the same inputs as the
        exact path: the running scale (O(T) numpy, cheap next to the LSTM) and the day ring
        (year-ago inputs) still see the whole window. So the state equals the exact one with
        its h, c reset to zero W days before the end. The recurrent state forgets, but a
        zero state next to a mature scale is not what training showed the net: short
        warm-ups can throw single intermittent series far off (on UCI up to W = 120; from
        182 on, no series moved more than 0.5%: benchmarks/README.md, "Full window with
        bounded warm-up"). W >= T is the exact path.
        """
        arr = np.asarray(windows, dtype=np.float64)
        n, length = arr.shape
        start = 0 if warmup_days is None else max(0, length - _warmup_length(warmup_days))
        ends = np.broadcast_to(np.asarray(end_days, dtype="datetime64[D]"), (n,)).copy()
        scales, scale_state = running_scales(arr, self.config.scale_memory)
        observed = np.isfinite(arr)
        first = np.where(observed.any(axis=1), observed.argmax(axis=1), length)
        ring = DayRing.from_windows(arr) if self.config.year_ago else None
        if start:  # the LSTM part: the last `length - start` days, right-aligned as before
            first = np.maximum(first, start) - start  # a series seen before starts at once
            arr, scales, length = arr[:, start:], scales[:, start:], length - start
        distinct, inverse = _distinct_days(ends)  # calendar rows once per distinct end day
        offsets = (length - 1 - np.arange(length)).astype("timedelta64[D]")
        cal = calendar_features(distinct[:, None] - offsets[None, :], self.config.calendar,
                                self.config.month_inputs)
        cal = cal[np.zeros(n, dtype=np.intp) if inverse is None else inverse]
        feats = input_features(arr, scales, cal, self.log_scale_mean, self.log_scale_std)
        lengths = length - first
        layers, hidden = self.config.layers, self.config.hidden
        h = torch.zeros(layers, n, hidden, device=self.device)
        c = torch.zeros(layers, n, hidden, device=self.device)
        live = np.flatnonzero(lengths > 0)
        if (live.size and self.device.type == "cpu" and live.size >= _LOOP_MIN_ROWS
                and self._packed().step_packed):
            # The packed step in a Python loop beats torch's CPU LSTM from ~512 series on
            # (one matmul per step, no tanh; 1.5x at 2,048); cuDNN's fused kernels win on CUDA.
            begin = int(first[live].min())
            x = self._tensor(feats[live, begin:])
            with torch.inference_mode():
                hn, cn = self._packed().run(x, (first[live] - begin).astype(np.intp))
            idx = torch.as_tensor(live, device=self.device)
            h[:, idx], c[:, idx] = hn, cn
        elif live.size:
            # Left-align so every row starts at its first observation; the tail is padding.
            cols = np.minimum(first[:, None] + np.arange(length)[None, :], length - 1)
            aligned = np.take_along_axis(feats, cols[:, :, None], axis=1)
            x = self._tensor(aligned[live, : int(lengths.max())])
            with torch.inference_mode():
                if np.all(lengths[live] == lengths[live][0]):
                    _, (hn, cn) = self.net.encode(x)
                else:
                    packed = torch.nn.utils.rnn.pack_padded_sequence(
                        x, torch.as_tensor(lengths[live]), batch_first=True,
                        enforce_sorted=False)
                    _, (hn, cn) = self.net.lstm(packed)
            idx = torch.as_tensor(live, device=self.device)
            h[:, idx], c[:, idx] = hn, cn
        return SeriesState(h, c, scale_state, ends, ring)

    # --- incremental -----------------------------------------------------------------------
    def update(self, state: SeriesState, values: ArrayLike, days: ArrayLike | None = None,
               *, consume: bool = False) -> SeriesState:
        """Fold one new bucket per series (n,) into `state`: one LSTM step, O(1) per series.

        `days` defaults to the day after each series' last bucket. A NaN before a series'
        first observation changes nothing (still no history); a NaN after it is a missing
        bucket. Returns a new state; `state` is left as it was, unless `consume`: then the
        caller drops `state` (a stream, the keyed store) and its day ring (year-ago inputs)
        is advanced in place, one write per series, instead of copied (392 days).
        """
        y = np.asarray(values, dtype=np.float64).reshape(-1)
        n = state.n_series
        if y.shape[0] != n:
            raise InvalidWindowError(f"expected {n} values, got {y.shape[0]}")
        if np.any(y < 0) or np.any(np.isinf(y)):
            raise InvalidWindowError("new bucket values must be finite and >= 0 (or NaN)")
        new_days = (state.last_day + ONE_DAY if days is None
                    else np.broadcast_to(np.asarray(days, dtype="datetime64[D]"), (n,)).copy())
        scale = state.scale.copy()
        s = scale_step(scale, y, self.config.scale_memory)
        live = scale.count > 0
        distinct, inverse = _distinct_days(new_days)
        cal = _day_rows(distinct, _calendar_row, self.config.calendar,
                        self.config.month_inputs)  # per distinct day, memoised
        cal = cal[np.zeros(n, dtype=np.intp) if inverse is None else inverse]
        x = self._tensor(input_features(y, s, cal, self.log_scale_mean, self.log_scale_std))
        packed = self._packed()
        with torch.inference_mode():
            if packed.step_packed:
                h, c = packed.step(x, state.h, state.c)
            else:
                _, (h, c) = self.net.encode(x[:, None], (state.h, state.c))
            if not live.all():
                keep = torch.as_tensor(live, device=self.device)[None, :, None]
                h, c = torch.where(keep, h, state.h), torch.where(keep, c, state.c)
        ring = state.ring
        if ring is not None:
            ring = ring.push_(y) if consume else ring.push(y)
        return SeriesState(h, c, scale, new_days, ring)

    def _packed(self) -> PackedNet:
        """The current weights laid out for one-step inference (re-packed when they change)."""
        self._packed_net = PackedNet.of(self.net, self._packed_net)
        return self._packed_net

    def forecast(self, state: SeriesState, horizon: int) -> QuantileForecast:
        """Quantile forecast of the next `horizon` buckets after each series' last bucket."""
        big_h = self.config.horizon
        integer = self.config.integer_demand
        cal = self.calibration
        # With a calibration the head's quantiles stay unrounded until it has moved them.
        out = self.head_output(state, integer=integer and cal is None)
        if cal is not None:
            cal.apply(out, integer=integer)
        q = self._levels.size
        daily, cumulative, mean = out[..., :q], out[..., q : 2 * q], out[..., 2 * q]
        if horizon > big_h:
            daily, cumulative, mean = _extend(daily, cumulative, mean, horizon)
            return QuantileForecast(self._levels, daily[:, :horizon], cumulative[:, :horizon],
                                    mean[:, :horizon])
        # Valid by construction: clipped at 0, monotone head, cummax over steps, float64.
        return QuantileForecast.trusted(self._levels, daily[:, :horizon],
                                        cumulative[:, :horizon], mean[:, :horizon])

    def head_output(self, state: SeriesState, *, integer: bool) -> FloatArray:
        """The head's forecast block (n, H, 2Q + 1) float64 [daily quantiles | cumulative
        quantiles | mean] in demand units, clipped at 0, rounded when `integer`; before the
        interval calibration (`forecast` applies it)."""
        live = state.scale.count > 0
        scale = self._tensor(np.where(live, np.maximum(state.scale.level, 0.01), 0.0))
        packed = self._packed()
        if not packed.head_packed:
            return self._forecast_unpacked(state, scale, integer)
        future, inv, year = self._head_rows(state)
        with torch.inference_mode():
            out_t = packed.quantiles(state.h[-1], future, inv, scale, year=year,
                                     integer=integer)
            out: FloatArray = out_t.cpu().numpy()
        return out

    def _head_rows(self, state: SeriesState) -> tuple[torch.Tensor, torch.Tensor | None,
                                                     torch.Tensor | None]:
        """The head inputs `features.head_inputs` gives, as PackedNet takes them: the future
        features of each distinct origin day (and, with the calendar mask, of each day with
        the mask), which of those rows each series has (None: all the first), and the
        per-series year-ago features (None without them)."""
        cfg, big_h = self.config, self.config.horizon
        distinct, inverse = _distinct_days(state.last_day)
        rows = _day_rows(distinct, _future_row, cfg.calendar, big_h, cfg.head_calendar,
                         cfg.head_annual, cfg.head_month, cfg.head_month_pairs,
                         cfg.month_inputs)
        if state.ring is None:
            if cfg.year_ago:
                raise ValueError("this model's states carry a day ring (year-ago inputs)")
            inv = None if inverse is None else torch.as_tensor(inverse, device=self.device)
            return self._tensor(rows), inv, None
        scale = np.maximum(state.scale.level, SCALE_FLOOR)
        weeks = cfg.year_ago_weeks
        if agrees(big_h, weeks):  # the definition's numbers as matrix products (year_ago.py)
            year = year_ago_rows(state.ring.span(year_ago_span(big_h, weeks), np.float32),
                                 scale, state.last_day, big_h, weeks)
        else:
            year = year_ago_features(state.ring.span(year_ago_span(big_h, weeks)), scale,
                                     state.last_day, big_h, weeks)
        which = np.zeros(state.n_series, dtype=np.intp) if inverse is None else inverse
        if cfg.year_ago_masks_calendar and cfg.head_calendar:  # see features.head_inputs
            masked = rows.copy()
            masked[:, big_h : 2 * big_h + N_MONTHS] = 0.0
            which = which + rows.shape[0] * (year[:, -1] > 0)
            rows = np.concatenate([rows, masked])
        inv = torch.as_tensor(which, device=self.device)
        return self._tensor(rows), inv, self._tensor(year)

    def _forecast_unpacked(self, state: SeriesState, scale: torch.Tensor,
                           integer: bool | None = None) -> FloatArray:
        """`head_output` through LSTMNet's own head (heads PackedNet does not lay out);
        `integer` defaults to the config's."""
        big_h, cfg = self.config.horizon, self.config
        integer = cfg.integer_demand if integer is None else integer
        span = (None if state.ring is None
                else state.ring.span(year_ago_span(big_h, cfg.year_ago_weeks)))
        hol = self._tensor(head_inputs(
            state.last_day, np.maximum(state.scale.level, SCALE_FLOOR), span, horizon=big_h,
            calendar=cfg.calendar, head_calendar=cfg.head_calendar, annual=cfg.head_annual,
            mask_calendar=cfg.year_ago_masks_calendar, weeks=cfg.year_ago_weeks,
            month=cfg.head_month, pairs=cfg.head_month_pairs, months=cfg.month_inputs))
        with torch.inference_mode():
            stacked = reference_quantiles(self.net, state.h[-1], hol, scale, integer=integer)
            out: FloatArray = stacked.cpu().numpy().astype(np.float64)
        return out

    # --- the contract ----------------------------------------------------------------------
    def _predict(self, windows: FloatArray, horizon: int) -> QuantileForecast:
        end = self.window_end()
        return self.forecast(self.encode(windows, end), horizon)

    def __repr__(self) -> str:
        cfg = self.config
        return (f"LSTMForecaster(hidden={cfg.hidden}, layers={cfg.layers}, "
                f"horizon={cfg.horizon}, version={self.model_version!r})")


def _warmup_length(warmup_days: object) -> int:
    """`encode`'s warmup_days as a day count, or a clear error (a positive whole number)."""
    if (isinstance(warmup_days, bool) or not isinstance(warmup_days, int | np.integer)
            or warmup_days < 1):
        raise InvalidWindowError("warmup_days must be a whole number of days >= 1 (or None "
                                 f"for the whole window), got {warmup_days!r}")
    return int(warmup_days)


def _day_rows(days: DateArray, row: Callable[..., FloatArray], *args: object) -> FloatArray:
    """Stack `row(day, *args)` for each of `days` (u,): per-day features, memoised."""
    if days.size == 0:  # (0, width): the width comes from any day's row
        return np.stack([row(0, *args)])[:0]
    return np.stack([row(int(d), *args) for d in days.astype(np.int64)])


@lru_cache(maxsize=4096)
def _calendar_row(day: int, calendar: str, months: bool = True) -> FloatArray:
    """calendar_features of one day (days since 1970-01-01), read-only. The holiday lookup
    costs ~0.2 ms per call, as much as a 64-series step."""
    out: FloatArray = calendar_features(np.array([day], dtype="datetime64[D]"), calendar,
                                        months)[0]
    out.flags.writeable = False
    return out


@lru_cache(maxsize=4096)
def _future_row(day: int, calendar: str, horizon: int, head_calendar: bool,
                annual: bool, month: str = "none", pairs: int = 2,
                months: bool = True) -> FloatArray:
    """future_features of one origin day, read-only."""
    out: FloatArray = future_features(np.array([day], dtype="datetime64[D]"), horizon,
                                      calendar, head_calendar, annual, month, pairs,
                                      months)[0]
    out.flags.writeable = False
    return out


def _distinct_days(days: DateArray) -> tuple[DateArray, NDArray[np.intp] | None]:
    """The distinct days of `days` (n,) and which one each entry is (None: all the same day,
    the common case of a batch; np.unique sorts, which costs more than the check)."""
    if days.size == 0 or bool(np.all(days == days[0])):
        return days[:1], None
    distinct, inverse = np.unique(days, return_inverse=True)
    return distinct, inverse.astype(np.intp)


def _extend(daily: FloatArray, cumulative: FloatArray, mean: FloatArray,
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
