"""The LSTM's interval calibration: `fit_calibration` learns `forecasting.calibration`'s
quantile recalibration from the LSTM's own forecasts at the training's validation origins
(the method, and why daily quartiles keep their levels: that module's docstring).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import ArrayLike

from forecasting._numeric import FloatArray
from forecasting.calibration import IntervalCalibration, fit_levels, interp_weights

if TYPE_CHECKING:
    from forecasting.data import Panel
    from forecasting.lstm.config import LSTMConfig

__all__ = ["CalibrationSource", "IntervalCalibration", "fit_calibration", "fit_levels",
           "interp_weights"]


class CalibrationSource(Protocol):
    """What `fit_calibration` reads of a forecaster: its config and its inference path
    (an LSTMForecaster; named by its methods so this module does not import it)."""

    @property
    def config(self) -> LSTMConfig: ...

    def encode(self, windows: ArrayLike, end_days: ArrayLike,
               warmup_days: int | None = None, *, promo: ArrayLike | None = None,
               holiday: ArrayLike | None = None) -> Any: ...

    def update(self, state: Any, values: ArrayLike, days: ArrayLike | None = None, *,
               consume: bool = False, promo: ArrayLike | None = None,
               holiday: ArrayLike | None = None) -> Any: ...

    def head_output(self, state: Any, *, integer: bool, promo: FloatArray | None = None,
                    holiday: FloatArray | None = None) -> FloatArray: ...


def fit_calibration(forecaster: CalibrationSource, panel: Panel, *,
                    cumulative: bool = True) -> IntervalCalibration | None:
    """Learn the calibration from `forecaster`'s own forecasts (its inference path) at the
    validation origins of training: the last `config.val_days` days of `panel`, origins
    whose whole horizon lies in them, as early stopping uses. None when there are none."""
    cfg = forecaster.config
    big_h, length = cfg.horizon, panel.n_days
    first = length - 1 - cfg.val_days - cfg.mix_days
    last = length - 1 - cfg.mix_days - big_h  # not the mix's days (config.mix_days)
    if first < 0 or last < first:
        return None
    y, dates = panel.values, panel.dates
    flags = None  # the panel's promotion flags, as the forecaster reads them (promo_inputs)
    if cfg.promo_inputs and panel.covariates is not None:
        flags, _ = panel.covariates.span(panel.start, length + big_h)
    own = None  # the panel's own holiday flags, likewise (data_holidays)
    if cfg.data_holidays and panel.covariates is not None:
        own = panel.covariates.holiday_rows(np.asarray(panel.start), length + big_h)
    state = forecaster.encode(y[:, : first + 1], dates[first],
                              promo=None if flags is None else flags[:, : first + 1],
                              holiday=None if own is None else own[:, : first + 1])
    q = len(cfg.levels)
    outs, actual = [], []
    for t in range(first, last + 1):
        outs.append(forecaster.head_output(
            state, integer=False, promo=None if flags is None else flags[:, t + 1 : t + 1 + big_h],
            holiday=None if own is None else own[:, t + 1 : t + 1 + big_h]))
        actual.append(y[:, t + 1 : t + 1 + big_h])
        if t < last:
            state = forecaster.update(state, y[:, t + 1], dates[t + 1], consume=True,
                                      promo=None if flags is None else flags[:, t + 1],
                                      holiday=None if own is None else own[:, t + 1])
    out = np.concatenate(outs)  # (origins x n, H, 2Q + 1)
    future = np.concatenate(actual)  # (origins x n, H)
    integer = cfg.integer_demand
    daily_src, report = fit_levels(out[..., :q].reshape(-1, q), future.reshape(-1),
                                   cfg.levels, integer=integer, tails_only=True)
    report = {f"val_daily_coverage_{k}": v for k, v in report.items()}
    totals = np.cumsum(future, axis=1)  # a missing day leaves the totals after it NaN
    cum_src, cum_report = fit_levels(out[..., q : 2 * q].reshape(-1, q), totals.reshape(-1),
                                     cfg.levels, integer=integer)
    report.update({f"val_cumulative_coverage_{k}": v for k, v in cum_report.items()})
    report["val_origins"] = float(last - first + 1)
    return IntervalCalibration(
        tuple(cfg.levels), tuple(float(s) for s in daily_src),
        tuple(float(s) for s in cum_src) if cumulative else None, report)
