"""LSTMForecaster: the global LSTM behind the Forecaster contract, full-window or incremental,
and `train_lstm`, which trains one on a Panel (training.train_net) and calibrates it.

The package's modules import one way: features, config, model, kernels, device <-
calibration, training, year_ago <- serving (the inputs and post-processing both backends
share, torch-free) <- forecaster (torch) and numpy_forecaster (numpy_net, no torch) <- slots,
artifact, bench.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from forecasting._numeric import FloatArray
from forecasting.base import IncrementalForecaster, QuantileForecast
from forecasting.calibration import IntervalCalibration
from forecasting.covariates import Covariates
from forecasting.data import Panel
from forecasting.lstm.calibration import fit_calibration
from forecasting.lstm.device import auto_device
from forecasting.lstm.durable import fingerprint
from forecasting.lstm.features import SCALE_FLOOR, head_inputs, year_ago_span
from forecasting.lstm.kernels import PackedNet, reference_quantiles
from forecasting.lstm.model import LSTMConfig, LSTMNet
from forecasting.lstm.serving import (
    HeadForecasts,
    encode_inputs,
    head_rows,
    head_scale,
    update_inputs,
    window_holiday,
    window_promo,
    yesterday_utc,
)
from forecasting.lstm.slots import StateSlots
from forecasting.lstm.state import SeriesState
from forecasting.lstm.training import EpochCallback, train_net

__all__ = ["LSTMForecaster", "SeriesState", "TrainResult", "auto_device", "train_lstm",
           "yesterday_utc"]

_LOOP_MIN_ROWS = 512  # from this many series on, encode steps PackedNet on CPU (see encode)


class LSTMForecaster(HeadForecasts, IncrementalForecaster[SeriesState]):
    """One global LSTM for all series, probabilistic over a direct multi-horizon head.

    Each series is run from its first observed bucket (leading NaNs = no history) to the end
    of its window; a running per-series scale normalises inputs and outputs, calendar
    features (weekday, month, UK holidays/closures) say which day each bucket is. The state
    after the last bucket feeds a head that emits daily and cumulative quantiles and the
    mean for the next `config.horizon` buckets at once; longer horizons repeat the last week
    and widen the cumulative spread like sqrt(steps).

    `predict(windows, horizon, end_days=...)` is the Forecaster contract: windows end on
    `end_days`, by default at `end_day()` (yesterday, UTC). `fit(panel)` trains a fresh
    network with this model's config (`train_lstm`; `progress` shows a bar). The incremental
    path (IncrementalForecaster) — `encode`, `update` (one bucket, O(1) per series) and
    `forecast` — gives the same numbers as a full recompute.
    """

    name = "lstm"
    version = 1
    fits = True
    # With config.promo_inputs it reads planned promotions (`predict(..., covariates=)`,
    # `forecast_known`; `encode` and `update` take the days' flags); without, ignores them.
    uses_covariates = True
    # Days a cold start (the keyed inferencer's unknown, stale or re-versioned keys) runs
    # the LSTM over: `encode(..., warmup_days=this)`. None: the whole window. 182: the
    # shortest measured warm-up that moved no series' forecast by more than 0.5% at any
    # of 48 UCI and 56 store-item origins; shorter ones threw single intermittent UCI
    # series hundreds of times off (91 at 15 of 48 origins). benchmarks/README.md,
    # "Full window with bounded warm-up".
    cold_start_warmup_days = 182

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
        progress: bool = False,
    ) -> None:
        super().__init__(net.config.levels, end_day=end_day)
        self.config: LSTMConfig = net.config
        self.device = device if isinstance(device, torch.device) else auto_device(device)
        self.net = net.to(self.device).eval()
        self.log_scale_mean = float(log_scale_mean)
        self.log_scale_std = float(log_scale_std)
        self.model_id = model_id
        self.progress = progress  # `fit` shows a progress bar
        self.train_result: TrainResult | None = None  # of the last fit, if any
        self._packed_net: PackedNet | None = None
        # Learned on the training's validation origins (calibration.py); None: raw quantiles.
        self.calibration = calibration

    # --- fitting ---------------------------------------------------------------------------
    @property
    def needs_fit(self) -> bool:
        """True for a network neither trained (`fit`, `train_lstm`) nor loaded from an
        artifact: its weights are the initial random ones."""
        return self.model_id is None and self.train_result is None

    @property
    def fit_metrics(self) -> dict[str, float]:
        """The last training's metrics (losses, epochs, calibration, seconds)."""
        return {} if self.train_result is None else dict(self.train_result.metrics)

    def cap_threads(self, threads: int) -> None:
        """Cap torch's intra-op threads (1 is fastest per worker under load on a small CPU)."""
        torch.set_num_threads(threads)

    def fit(self, panel: Panel) -> Self:
        """Train a fresh network with this model's config on `panel`; replaces the weights.
        With `config.warm_start_epochs` > 0 a trained forecaster instead fine-tunes its
        weights for at most that many epochs (a cheap periodic retrain)."""
        config, init = self.config, None
        if config.warm_start_epochs > 0 and not self.needs_fit:
            config = dataclasses.replace(config, max_epochs=config.warm_start_epochs)
            init = self.net
        result = train_lstm(panel, config, device=str(self.device), progress=self.progress,
                            init=init)
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
               warmup_days: int | None = None, *,
               promo: ArrayLike | None = None,
               holiday: ArrayLike | None = None) -> SeriesState:
        """Run each window (n, T) from its first observation to its end date (n,) or ().
        `promo` (n, T): the windows' days' planned-promotion flags, read with
        `config.promo_inputs` (None: no promotion on any day).

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
        inputs = encode_inputs(self.config, windows, end_days, warmup_days,
                               self.log_scale_mean, self.log_scale_std, promo, holiday)
        feats, first, length = inputs.feats, inputs.first, inputs.length
        n = feats.shape[0]
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
        return SeriesState(h, c, inputs.scale, inputs.ends, inputs.ring)

    # --- incremental -----------------------------------------------------------------------
    def update(self, state: SeriesState, values: ArrayLike, days: ArrayLike | None = None,
               *, consume: bool = False, promo: ArrayLike | None = None,
               holiday: ArrayLike | None = None) -> SeriesState:
        """Fold one new bucket per series (n,) into `state`: one LSTM step, O(1) per series.
        `promo` (n,): the new days' planned-promotion flags, read with `config.promo_inputs`
        (None: no promotion).

        `days` defaults to the day after each series' last bucket. A NaN before a series'
        first observation changes nothing (still no history); a NaN after it is a missing
        bucket. Returns a new state; `state` is left as it was, unless `consume`: then the
        caller drops `state` (a stream, the keyed store) and its day ring (year-ago inputs)
        is advanced in place, one write per series, instead of copied (392 days).
        """
        inputs = update_inputs(self.config, state, values, days, self.log_scale_mean,
                               self.log_scale_std, promo, holiday)
        x, live = self._tensor(inputs.x), inputs.live
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
            ring = ring.push_(inputs.y) if consume else ring.push(inputs.y)
        return SeriesState(h, c, inputs.scale, inputs.days, ring)

    def _packed(self) -> PackedNet:
        """The current weights laid out for one-step inference (re-packed when they change)."""
        self._packed_net = PackedNet.of(self.net, self._packed_net)
        return self._packed_net

    def _predict_known(self, windows: FloatArray, horizon: int, end_days: ArrayLike | None,
                       covariates: Covariates) -> QuantileForecast:
        """`predict` with covariates: the windows' and the horizon's promotion flags."""
        ends = self.window_ends(end_days)
        promo = window_promo(self.config, covariates, ends, *windows.shape)
        holiday = window_holiday(self.config, covariates, ends, *windows.shape)
        state = self.encode(windows, ends, promo=promo, holiday=holiday)
        return self.forecast_known(state, horizon, covariates)

    def head_output(self, state: SeriesState, *, integer: bool,
                    promo: FloatArray | None = None,
                    holiday: FloatArray | None = None) -> FloatArray:
        """The head's forecast block (n, H, 2Q + 1) float64 [daily quantiles | cumulative
        quantiles | mean] in demand units, clipped at 0, rounded when `integer`; before the
        interval calibration (`forecast` applies it). `promo` (n, H): the planned-promotion
        flags of the forecast days (`serving.head_promo`; None: none); `holiday` (n, H):
        their own holiday flags (`serving.head_holiday`; None: the calendar's, or none known)."""
        scale = self._tensor(head_scale(state))
        packed = self._packed()
        if not packed.head_packed:
            return self._forecast_unpacked(state, scale, integer, promo, holiday)
        future, inv, year = self._head_rows(state, holiday)
        with torch.inference_mode():
            out_t = packed.quantiles(state.h[-1], future, inv, scale, year=year,
                                     promo=None if promo is None else self._tensor(promo),
                                     integer=integer)
            out: FloatArray = out_t.cpu().numpy()
        return out

    def _head_rows(self, state: SeriesState, holiday: FloatArray | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The head inputs `features.head_inputs` gives, as PackedNet takes them: the future
        features of each distinct origin day (and, with the calendar mask, of each day with
        the mask), which of those rows each series has (None: all the first), and the
        per-series year-ago features (None without them)."""
        rows, which, year = head_rows(self.config, state, holiday)
        inv = None if which is None else torch.as_tensor(which, device=self.device)
        return self._tensor(rows), inv, None if year is None else self._tensor(year)

    def _forecast_unpacked(self, state: SeriesState, scale: torch.Tensor,
                           integer: bool | None = None,
                           promo: FloatArray | None = None,
                           holiday: FloatArray | None = None) -> FloatArray:
        """`head_output` through LSTMNet's own head (heads PackedNet does not lay out);
        `integer` defaults to the config's."""
        big_h, cfg = self.config.horizon, self.config
        integer = cfg.integer_demand if integer is None else integer
        span = (None if state.ring is None
                else state.ring.span(year_ago_span(big_h, cfg.year_ago_weeks)))
        inputs = head_inputs(
            state.last_day, np.maximum(state.scale.level, SCALE_FLOOR), span, horizon=big_h,
            calendar=cfg.calendar, head_calendar=cfg.head_calendar, annual=cfg.head_annual,
            mask_calendar=cfg.year_ago_masks_calendar, weeks=cfg.year_ago_weeks,
            month=cfg.head_month, pairs=cfg.head_month_pairs, months=cfg.month_inputs,
            gaps=cfg.year_ago_gaps,
            promo=(None if not cfg.promo_inputs
                   else np.zeros((state.n_series, big_h)) if promo is None else promo))
        if holiday is not None:  # the data's own flags in place of the calendar's
            inputs = np.array(inputs, dtype=np.float64)
            inputs[..., :big_h] = holiday
        hol = self._tensor(inputs)
        with torch.inference_mode():
            stacked = reference_quantiles(self.net, state.h[-1], hol, scale, integer=integer)
            out: FloatArray = stacked.cpu().numpy().astype(np.float64)
        return out

    def keyed_states(self, max_states: int) -> StateSlots:
        """An empty store of this network's states by series key (`slots.StateSlots`), whose
        durable records (durable.py) carry this network's fingerprint."""
        return StateSlots(self.config.layers, self.config.hidden, self.device,
                          max_states=max_states, model=self.state_fingerprint(),
                          ring=self.config.year_ago)

    def state_fingerprint(self) -> int:
        """64-bit fingerprint of what shapes this model's carried states (weights, config,
        input normalisation): a durable state of another fingerprint is not resumed."""
        return fingerprint(self.net, self.log_scale_mean, self.log_scale_std)

    def __repr__(self) -> str:
        cfg = self.config
        return (f"LSTMForecaster(hidden={cfg.hidden}, layers={cfg.layers}, "
                f"horizon={cfg.horizon}, version={self.model_version!r})")


@dataclass
class TrainResult:
    """The fitted forecaster and how training went."""

    forecaster: LSTMForecaster
    history: list[dict[str, float]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


def train_lstm(
    panel: Panel,
    config: LSTMConfig | None = None,
    *,
    device: str = "auto",
    progress: bool = False,
    on_epoch: EpochCallback | None = None,
    max_seconds: float | None = None,
    init: LSTMNet | None = None,
) -> TrainResult:
    """A new LSTMForecaster trained on every series of `panel` (all days are history).

    `training.train_net` fits the network (early stopping on the last `config.val_days`
    days; see there); then, with `config.calibrate`, the interval calibration is learned
    on those validation origins through the forecaster's own inference path.
    """
    started = time.perf_counter()
    trained = train_net(panel, config, device=device, progress=progress, on_epoch=on_epoch,
                        max_seconds=max_seconds, init=init)
    forecaster = LSTMForecaster(trained.net, log_scale_mean=trained.log_scale_mean,
                                log_scale_std=trained.log_scale_std, device=device)
    metrics = dict(trained.metrics)
    cfg = forecaster.config  # as trained (integer demand, month head settled by train_net)
    if cfg.calibrate:  # on the validation origins early stopping used
        calibrate_started = time.perf_counter()
        forecaster.calibration = fit_calibration(forecaster, panel,
                                                 cumulative=cfg.calibrate_cumulative)
        if forecaster.calibration is not None:
            metrics.update(forecaster.calibration.report)
        metrics["calibration_seconds"] = time.perf_counter() - calibrate_started
    metrics["train_seconds"] = time.perf_counter() - started
    result = TrainResult(forecaster, trained.history, metrics)
    forecaster.train_result = result
    return result
