"""NumpyLSTMForecaster: a trained LSTM served on CPU in numpy (numpy_net.NumpyNet), no torch.

The serving half of `forecaster.LSTMForecaster`: the same inputs (serving.py), the same
network within float32 rounding, the same durable state layout and fingerprint (a worker on
either backend resumes the other's states) and the same model_version. It cannot train:
`fit` says which extra installs torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

from forecasting._numeric import FloatArray
from forecasting.base import IncrementalForecaster, QuantileForecast
from forecasting.calibration import IntervalCalibration
from forecasting.covariates import Covariates
from forecasting.data import Panel
from forecasting.lstm.config import LSTMConfig
from forecasting.lstm.durable import weights_fingerprint
from forecasting.lstm.numpy_net import NumpyNet
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

__all__ = ["TRAIN_EXTRA_HINT", "NumpyLSTMForecaster"]

TRAIN_EXTRA_HINT = "pip install 'shelfcast[train]'"


class NumpyLSTMForecaster(HeadForecasts, IncrementalForecaster[SeriesState]):
    """A trained LSTM (weights by state_dict name, `LSTMNet`'s) served in float32 numpy."""

    name = "lstm"
    version = 1
    fits = True
    uses_covariates = True  # as LSTMForecaster's: with config.promo_inputs
    cold_start_warmup_days = 182  # as LSTMForecaster's (see there)
    backend = "numpy"

    def __init__(
        self,
        config: LSTMConfig,
        weights: Mapping[str, NDArray[np.generic]],
        *,
        log_scale_mean: float = 0.0,
        log_scale_std: float = 1.0,
        model_id: str | None = None,
        end_day: Callable[[], np.datetime64] = yesterday_utc,
        calibration: IntervalCalibration | None = None,
    ) -> None:
        super().__init__(config.levels, end_day=end_day)
        self.config = config
        self.weights = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
        self.net = NumpyNet.from_weights(config, self.weights)
        self.log_scale_mean = float(log_scale_mean)
        self.log_scale_std = float(log_scale_std)
        self.model_id = model_id
        self.calibration = calibration
        self._fingerprint = weights_fingerprint(config, self.weights, self.log_scale_mean,
                                                self.log_scale_std)
        self._limiter: object | None = None

    @property
    def needs_fit(self) -> bool:
        """Never: it is made from trained weights."""
        return False

    def cap_threads(self, threads: int) -> None:
        """Cap the BLAS threads of numpy's matrix products (threadpoolctl), as torch's
        set_num_threads does for the torch backend: 1 is fastest per worker under load."""
        from threadpoolctl import threadpool_limits

        self._limiter = threadpool_limits(limits=threads, user_api="blas")

    def fit(self, panel: Panel) -> Self:
        """Training needs torch: a clear error saying what to install."""
        raise RuntimeError(f"training the LSTM needs torch: {TRAIN_EXTRA_HINT}")

    # --- the recurrence --------------------------------------------------------------------
    def encode(self, windows: ArrayLike, end_days: ArrayLike,
               warmup_days: int | None = None, *,
               promo: ArrayLike | None = None,
               holiday: ArrayLike | None = None) -> SeriesState:
        """As `LSTMForecaster.encode`: each window (n, T) from its first observation (or
        `warmup_days` before its end) to its end date (`promo` (n, T): the days' flags)."""
        inputs = encode_inputs(self.config, windows, end_days, warmup_days,
                               self.log_scale_mean, self.log_scale_std, promo, holiday)
        feats, first = inputs.feats, inputs.first
        n = feats.shape[0]
        shape = (self.config.layers, n, self.config.hidden)
        h, c = np.zeros(shape, dtype=np.float32), np.zeros(shape, dtype=np.float32)
        live = np.flatnonzero(first < inputs.length)
        if live.size:
            begin = int(first[live].min())
            hn, cn = self.net.run(feats[live, begin:].astype(np.float32),
                                  (first[live] - begin).astype(np.intp))
            h[:, live], c[:, live] = hn, cn
        return SeriesState(h, c, inputs.scale, inputs.ends, inputs.ring)

    def update(self, state: SeriesState, values: ArrayLike, days: ArrayLike | None = None,
               *, consume: bool = False, promo: ArrayLike | None = None,
               holiday: ArrayLike | None = None) -> SeriesState:
        """As `LSTMForecaster.update`: one bucket per series, one step."""
        inputs = update_inputs(self.config, state, values, days, self.log_scale_mean,
                               self.log_scale_std, promo, holiday)
        h_old, c_old = np.asarray(state.h), np.asarray(state.c)
        h, c = self.net.step(inputs.x, h_old, c_old)
        if not inputs.live.all():
            keep = inputs.live[None, :, None]
            h, c = np.where(keep, h, h_old), np.where(keep, c, c_old)
        ring = state.ring
        if ring is not None:
            ring = ring.push_(inputs.y) if consume else ring.push(inputs.y)
        return SeriesState(h, c, inputs.scale, inputs.days, ring)

    def _predict_known(self, windows: FloatArray, horizon: int, end_days: ArrayLike | None,
                       covariates: Covariates) -> QuantileForecast:
        """As `LSTMForecaster._predict_known`."""
        ends = self.window_ends(end_days)
        promo = window_promo(self.config, covariates, ends, *windows.shape)
        holiday = window_holiday(self.config, covariates, ends, *windows.shape)
        state = self.encode(windows, ends, promo=promo, holiday=holiday)
        return self.forecast_known(state, horizon, covariates)

    def head_output(self, state: SeriesState, *, integer: bool,
                    promo: FloatArray | None = None,
                    holiday: FloatArray | None = None) -> FloatArray:
        """As `LSTMForecaster.head_output`: (n, H, 2Q + 1) before the calibration."""
        rows, which, year = head_rows(self.config, state, holiday)
        top = np.asarray(state.h)[-1]
        return self.net.quantiles(top, rows, which, head_scale(state), year=year,
                                  promo=promo, integer=integer)

    def keyed_states(self, max_states: int) -> StateSlots:
        """An empty store of this network's states by key, in numpy arrays; the records it
        exports carry the same fingerprint as the torch backend's."""
        return StateSlots(self.config.layers, self.config.hidden, None,
                          max_states=max_states, model=self._fingerprint,
                          ring=self.config.year_ago)

    def state_fingerprint(self) -> int:
        """durable.fingerprint of these weights (equal to the torch net's)."""
        return self._fingerprint

    def __repr__(self) -> str:
        cfg = self.config
        return (f"NumpyLSTMForecaster(hidden={cfg.hidden}, layers={cfg.layers}, "
                f"horizon={cfg.horizon}, version={self.model_version!r})")
