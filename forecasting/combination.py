"""`lstm_lgbm`: the LSTM and the LightGBM peer combined per quantile level, with weights
learned on the LSTM's validation days, servable from the window the stream already keeps.

- Weights: for each output level (daily and cumulative blocks apart) and for the mean, the
  share w in [0, 1] of the LSTM (1 - w: LightGBM) on a grid of `GRID_STEPS` + 1 values that
  minimises the pooled pinball loss (the mean: the absolute error) on the LSTM's validation
  origins, after the same post-processing as at serving (rounded for counts). No backtest
  test fold or holdout is read: the LSTM validates on the last `val_days` of the training
  history, and the LightGBM that forecasts those days is fitted on the days before them
  (`fit`). Then LightGBM is refitted on the whole training history for serving.
- Serving: the state is the LSTM's (`SeriesState`), whose day ring holds the last
  `RING_DAYS` (392) days of each series; LightGBM's lag features read no further back than
  that (its longest look-back is 364 + 28 days), so `forecast(state)` computes them from the
  ring. The batch path (`predict`) goes through `encode` + `forecast` too, so serving from
  the window and a backtest give the same numbers.
- Quantiles of the mix are sorted along the levels (per-level weights may cross them); a
  sorted convex mix of curves that rise over steps still rises.
- Intervals (`mix_calibration`): a mix of two models' quantiles is not calibrated even when
  one part is. After the weights, `forecasting.calibration`'s quantile recalibration (the one
  the LSTM uses) is learned on the same validation origins from the mix's own unrounded,
  sorted quantiles ("daily", the default: the daily tails; "both": and all cumulative levels;
  "off": none) and applied to the mix before rounding, in `forecast`, so the stream and a
  backtest serve the same numbers. Saved in the artifact; one saved without it serves the
  plain mix. Measured (benchmarks/README "Levers"): daily 80% coverage on the three real sets
  0.899/0.880/0.775 -> 0.792/0.849/0.779 for +0.4% pinball on average; recalibrating the
  cumulative levels too cost +4.6% horizon-total pinball (Rossmann +15%), so not by default.
- Promotion days (`promo_weights`, off): with covariates, the forecast days with a planned
  promotion may take weights of their own (`CombinationWeights.promo`, learned on the
  validation days with one; the others on the days without), chosen per forecast day from
  the covariates the forecast receives (none: no promotion, the days-without weights), and
  (`split_calibration`, off) a calibration of their own. Measured (benchmarks/README
  "Promotion-aware mix"): tuning pinball +4.6% on Rossmann, +0.3% on FreshRetailNet against
  one set of weights; the split calibration worse still. An artifact without them serves
  one set of weights.
- A split validation window (`LSTMConfig.mix_days`, 0 by default): the weights and the mix's
  calibration learned on the last `mix_days`, which the LSTM neither trained nor early-stopped
  on (its validation days lie before them). Measured (benchmarks/README "Split validation
  window"): with 28 + 28 days tuning pinball +1.7% on average (the LSTM part loses 28 days of
  recency), with 14 + 14 worse still (one early-stopping origin), so off.
- The LSTM part reading promotions (`LSTMConfig.promo_inputs`, off): the flags reach it
  wherever covariates do (validation origins, `predict`, `forecast`). Measured
  (benchmarks/README "Lever 2: the LSTM reading promotions"): the LSTM alone gains (tuning
  pinball -1.2% on average) but the mix loses (+0.3%), so off.
- Shrunk weights (`weight_shrink`, 0): each level's weight moved toward its block's pooled
  weight (fewer effective parameters learned on 9-15 overlapping validation origins).
  Measured (benchmarks/README "Year-ago gaps"): halfway, tuning pinball +0.26% on Rossmann,
  -0.12% UCI, -0.01% FreshRetailNet (median-MASE +0.40% on average); all the way worse
  still, so off.
- Cumulative weights that pay for falls (`cumulative_weights="fall"`, the default): the
  cumulative levels >= 0.9 (those a restock's order-up-to level reads) learn the weight
  minimising pinball + (1 - tau) x the mean fall from one validation origin to the next (a
  fall leaves stock above the new level: an over-forecast of its size); the other levels,
  the daily block and the mean as before ("levels"). Measured (benchmarks/README
  "Cumulative mix weights that pay for falls"), served policy's inventory at 95% fill:
  UCI -8.3%, FreshRetailNet -1.5%, Rossmann +0.3% (-0.08% over 112 days), -3.2% on
  average; daily pinball, MASE, WAPE and coverage the same bits, horizon-total pinball
  +0.04% tune / -0.56% holdout. The rule was the second one tried on those runs (the
  first, on every level, cost Rossmann 1.4%): said with the figures.
- Weights per demand class (`class_weights`, off): each series classed at the origin from
  the last CLASS_DAYS days of its ring (forecasting.demand_class: smooth, erratic,
  intermittent, lumpy), each class seen on enough validation series learning its own
  weights. Measured (benchmarks/README "Session 13"): daily pinball +0.2% on average, the
  served policy's inventory -0.4% UCI, +0.6% FreshRetailNet, so off.
- The daily block's shrink apart from the cumulative block's (`cumulative_weight_shrink`;
  None: `weight_shrink`'s): one daily weight with the cumulative levels their own gives
  daily pinball -0.2% on average but UCI's median-MASE +0.6% on the holdout (same README
  section), so not the default.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

from forecasting._numeric import FloatArray
from forecasting.base import Forecaster, IncrementalForecaster, KeyedStates, QuantileForecast
from forecasting.calibration import IntervalCalibration, fit_levels
from forecasting.covariates import Covariates
from forecasting.data import Panel
from forecasting.demand_class import CLASS_DAYS, CLASSES, demand_classes
from forecasting.errors import ForecastingError

BoolArray = NDArray[np.bool_]
ClassArray = NDArray[np.int8]  # per series, an index into forecasting.demand_class.CLASSES

if TYPE_CHECKING:
    from forecasting.lightgbm_peer import LightGBMForecaster
    from forecasting.lstm.config import LSTMConfig
    from forecasting.lstm.forecaster import LSTMForecaster
    from forecasting.lstm.numpy_forecaster import NumpyLSTMForecaster

    ServedLSTM = LSTMForecaster | NumpyLSTMForecaster  # the LSTM part: either backend
    from forecasting.lstm.state import SeriesState

__all__ = [
    "COMBINATION_FILE",
    "CombinationWeights",
    "LSTMLightGBMForecaster",
    "Mix",
    "ValidationForecasts",
    "combine",
    "learn_calibration",
    "learn_weights",
    "load_combination",
    "make_lstm_lgbm",
    "promotion_days",
    "save_combination",
    "state_classes",
]

GRID_STEPS = 20  # weights 0, 0.05, ..., 1
# Validation (series, day) cells needed both with and without a planned promotion before the
# promotion days get weights of their own (and, for the cumulative levels, steps whose span
# holds one / none): fewer, and one set of weights serves every day.
MIN_PROMO_DAYS = 200
MIX_CALIBRATIONS = ("off", "daily", "both")  # which blocks of the mix are recalibrated
DEFAULT_MIX_CALIBRATION = "daily"
# Promotion days weighted on their own (learn_weights) and calibrated on their own
# (learn_mix): off, measured worse (module docstring).
DEFAULT_PROMO_WEIGHTS = False
DEFAULT_SPLIT_CALIBRATION = False
# Days at the end of the LSTM's training history held out of its training and early stopping,
# on which the mix's weights and calibration are learned (LSTMConfig.mix_days; 0: the mix
# learns on the LSTM's early-stopping days). benchmarks/README "Split validation window".
DEFAULT_MIX_DAYS = 0
# Each level's weight moved this share of the way toward its block's pooled weight
# (`learn_weights`' shrink; 0: every level its own). benchmarks/README "Year-ago gaps".
DEFAULT_WEIGHT_SHRINK = 0.0
DEFAULT_CUMULATIVE_WEIGHT_SHRINK: float | None = None  # None: DEFAULT_WEIGHT_SHRINK's
# How the cumulative block's weights are learned (`learn_weights`' cumulative_weights): "levels",
# each level's pinball alone; "fall", the levels from FALL_LEVELS_FROM up also pay for their
# falls from one validation origin to the next. Measured (benchmarks/README "Cumulative mix
# weights that pay for falls"); "fall" by default since session 12.
CUMULATIVE_WEIGHTS = ("levels", "fall")
DEFAULT_CUMULATIVE_WEIGHTS = "fall"
FALL_LEVELS_FROM = 0.9  # the upper levels: those an order-up-to level is read from
# Weights of their own per demand class (`learn_weights`' classes; forecasting.demand_class:
# smooth, erratic, intermittent, lumpy, read from each series' last CLASS_DAYS days at the
# origin): off by default until measured. A class seen on fewer than MIN_CLASS_SERIES
# series per validation origin (on average) serves the weights learned on every series.
DEFAULT_CLASS_WEIGHTS = False
MIN_CLASS_SERIES = 20
COMBINATION_FILE = "combination.json"
LSTM_DIR, LIGHTGBM_DIR = "lstm", "lightgbm"


class CombinationError(ForecastingError):
    """A combined model that cannot be built, fitted or loaded."""


@dataclass(frozen=True)
class CombinationWeights:
    """The LSTM's share per level (LightGBM gets the rest), for the daily and cumulative
    quantiles and the mean; `report`: validation losses of each part and of the mix.

    `promo`: the weights of forecast days with a planned promotion (a cumulative level: of
    steps whose span holds one); this object's own then serve the days without. None: one
    set of weights for every day (learned without covariates, or too few promotion days).

    `classes`: per demand class (`forecasting.demand_class.CLASSES`), the weights of the
    series of that class at the forecast's origin; an entry None (a class too rare on the
    validation origins) and a forecast without classes serve this object's own."""

    levels: tuple[float, ...]
    daily: tuple[float, ...]
    cumulative: tuple[float, ...]
    mean: float
    report: dict[str, float] = field(default_factory=dict)
    promo: CombinationWeights | None = None
    classes: tuple[CombinationWeights | None, ...] | None = None

    def __post_init__(self) -> None:
        q = len(self.levels)
        if len(self.daily) != q or len(self.cumulative) != q:
            raise CombinationError(f"need one weight per level ({q})")
        if self.classes is not None and len(self.classes) != len(CLASSES):
            raise CombinationError(f"need one entry per demand class {CLASSES}")
        if self.classes is not None and self.promo is not None:
            raise CombinationError("weights per demand class and per promotion day are "
                                   "exclusive")
        ws = (*self.daily, *self.cumulative, self.mean)
        if not all(0.0 <= w <= 1.0 for w in ws):
            raise CombinationError(f"weights must lie in [0, 1], got {ws}")

    @classmethod
    def equal(cls, levels: Sequence[float]) -> CombinationWeights:
        """Half and half everywhere (no validation origins to learn from)."""
        half = tuple(0.5 for _ in levels)
        return cls(tuple(float(x) for x in levels), half, half, 0.5, {"val_origins": 0.0})

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (artifact metadata); "promo" only when there are promotion
        weights, so a model without them keeps the id it had before they existed."""
        out: dict[str, Any] = {"levels": list(self.levels), "daily": list(self.daily),
                               "cumulative": list(self.cumulative), "mean": self.mean,
                               "report": dict(self.report)}
        if self.promo is not None:
            out["promo"] = self.promo.to_json()
        if self.classes is not None:
            out["classes"] = {name: None if c is None else c.to_json()
                              for name, c in zip(CLASSES, self.classes, strict=True)}
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CombinationWeights:
        """Inverse of to_json (an artifact from before promotion or class weights: one
        set)."""
        promo, classes = data.get("promo"), data.get("classes")
        return cls(tuple(float(x) for x in data["levels"]),
                   tuple(float(x) for x in data["daily"]),
                   tuple(float(x) for x in data["cumulative"]), float(data["mean"]),
                   {k: float(v) for k, v in (data.get("report") or {}).items()},
                   None if promo is None else cls.from_json(promo),
                   None if classes is None else tuple(
                       None if classes.get(name) is None else cls.from_json(classes[name])
                       for name in CLASSES))

    def per_cell(self, promo: BoolArray | None, classes: ClassArray | None = None,
                 ) -> tuple[FloatArray, FloatArray, FloatArray | float]:
        """(daily, cumulative, mean) weights broadcastable against a forecast's blocks:
        (Q,), (Q,), a number without promotion or class weights, or without flags or
        classes (`promo` (n, H): forecast days with a planned promotion; `classes` (n,):
        each series' demand class; None: none); with class weights and classes (n, 1, Q),
        (n, 1, Q), (n, 1); with promotion weights and flags (n, H, Q), (n, H, Q), (n, H)."""
        if self.classes is not None and classes is not None:
            table = [self if c is None else c for c in self.classes]
            rows = np.asarray(classes, dtype=np.intp)
            return (np.array([t.daily for t in table])[rows][:, None, :],
                    np.array([t.cumulative for t in table])[rows][:, None, :],
                    np.array([t.mean for t in table])[rows][:, None])
        wd, wc = np.asarray(self.daily), np.asarray(self.cumulative)
        if self.promo is None or promo is None:
            return wd, wc, self.mean
        on = self.promo
        spans = np.logical_or.accumulate(promo, axis=1)  # a promotion in (origin, step]
        return (np.where(promo[..., None], np.asarray(on.daily), wd),
                np.where(spans[..., None], np.asarray(on.cumulative), wc),
                np.where(promo, on.mean, self.mean))


def _post(q: FloatArray, integer: bool) -> FloatArray:
    q = np.maximum(q, 0.0)
    return np.round(q) if integer else q


def _pinball_level(y: FloatArray, q: FloatArray, tau: float) -> float:
    diff = y - q
    return float(np.mean(np.maximum(tau * diff, (tau - 1.0) * diff)))


def _absolute_error(y: FloatArray, q: FloatArray) -> float:
    return float(np.mean(np.abs(y - q)))


def _best(a: FloatArray, b: FloatArray, loss: Callable[[FloatArray], float],
          integer: bool) -> tuple[float, float, float, float]:
    """(weight, loss of the mix, loss of a alone, loss of b alone) over the grid; ties go to
    the first grid point (reproducible)."""
    grid = np.linspace(0.0, 1.0, GRID_STEPS + 1)
    losses = np.array([loss(_post(w * a + (1.0 - w) * b, integer)) for w in grid])
    k = int(np.argmin(losses))
    return float(grid[k]), float(losses[k]), float(losses[-1]), float(losses[0])


def _cumulative_weights(value: str) -> str:
    """`value` if it names a way to learn the cumulative weights (`CUMULATIVE_WEIGHTS`)."""
    if value not in CUMULATIVE_WEIGHTS:
        raise CombinationError(f"cumulative_weights must be one of {CUMULATIVE_WEIGHTS}, "
                               f"got {value!r}")
    return value


def _fall_loss(t: FloatArray, ok: BoolArray, cells: BoolArray | None, tau: float,
               origins: int, m: FloatArray) -> float:
    """Pinball at tau of the mixed quantile m (origins x series, steps) against t on the
    cells `ok`, + (1 - tau) x its mean fall from one origin to the next (same series and
    step; the cells are origin-major) over the pairs of cells both in `cells` (None: every
    cell): `_best`'s loss for `cumulative_weights="fall"`."""
    steps = m.reshape(origins, -1)
    falls = np.maximum(steps[:-1] - steps[1:], 0.0)
    if cells is not None:
        inside = cells.reshape(origins, -1)
        falls = falls[inside[:-1] & inside[1:]]
    fall = float(np.mean(falls)) if falls.size else 0.0
    return _pinball_level(t[ok], m[ok], tau) + (1.0 - tau) * fall


def _best_pooled(a: FloatArray, b: FloatArray, t: FloatArray, levels: FloatArray,
                 integer: bool) -> float:
    """The one weight of a (cells, Q) on the grid that minimises the pinball loss summed
    over the Q levels of the mix with b (cells, Q) against t (cells,); ties: the first."""
    grid = np.linspace(0.0, 1.0, GRID_STEPS + 1)
    losses = [sum(_pinball_level(t, _post(w * a[:, k] + (1.0 - w) * b[:, k], integer),
                                 float(tau)) for k, tau in enumerate(levels))
              for w in grid]
    return float(grid[int(np.argmin(losses))])


def learn_weights(lstm: Sequence[QuantileForecast], lgbm: Sequence[QuantileForecast],
                  actual: Sequence[FloatArray], *, integer: bool,
                  promo: Sequence[BoolArray] | None = None,
                  shrink: float = DEFAULT_WEIGHT_SHRINK,
                  cumulative_shrink: float | None = None,
                  cumulative_weights: str = DEFAULT_CUMULATIVE_WEIGHTS,
                  classes: Sequence[ClassArray] | None = None) -> CombinationWeights:
    """Weights from forecasts of both models at the same origins (one QuantileForecast
    each, n series x H steps) and what followed each origin (n, H) (NaN: unknown).

    `classes`: per origin, each series' demand class (n,) at that origin. Given, every
    class seen on at least `MIN_CLASS_SERIES` series per origin (on average) gets weights
    of its own, learned on its series alone (the same rules per block, the falls counted
    between two origins where the series was of that class); the rest serve the weights
    learned on every series. Exclusive with `promo`.

    `promo`: per origin, the forecast days (n, H) with a planned promotion. Given, and with
    at least `MIN_PROMO_DAYS` validation days both with and without one, the days with a
    promotion get their own weights (`CombinationWeights.promo`) and the rest are learned on
    the days without; a cumulative level whose group has fewer such steps keeps the weights
    learned on all of them. Otherwise one set of weights, learned on every day.

    `shrink` in [0, 1]: each level's weight moves that share of the way toward its block's
    pooled weight (the one weight that minimises the block's pinball summed over its
    levels): 0, each level its own; 1, one weight per block. `cumulative_shrink` (None:
    `shrink`): the cumulative block's, when it differs from the daily block's.

    `cumulative_weights` (`CUMULATIVE_WEIGHTS`): "fall", each cumulative level tau >=
    `FALL_LEVELS_FROM` takes the grid weight minimising its pinball + (1 - tau) x the mean
    fall of the mixed quantile from one origin to the next (same series and step): a fall of
    an order-up-to level leaves that much stock above it, an over-forecast of its size, which
    the pinball loss at tau charges (1 - tau) per unit. The origins are `actual`'s, in order
    (consecutive days); `shrink` then applies to the other levels only."""
    shrinks = (shrink, shrink if cumulative_shrink is None else cumulative_shrink)
    if not all(0.0 <= x <= 1.0 for x in shrinks):
        raise CombinationError(f"weight shrink must lie in [0, 1], got {shrinks}")
    falls = len(actual) if _cumulative_weights(cumulative_weights) == "fall" else 0
    if not lstm or len(lstm) != len(lgbm) or len(lstm) != len(actual):
        raise CombinationError("need forecasts of both models and actuals at each origin")
    if classes is not None and promo is not None:
        raise CombinationError("weights per demand class and per promotion day are exclusive")
    if classes is not None and len(classes) != len(actual):
        raise CombinationError("need the series' demand classes at each origin")
    levels = lstm[0].levels
    horizon = min(f.horizon for f in (*lstm, *lgbm))
    y = np.concatenate([np.asarray(a, dtype=np.float64)[:, :horizon] for a in actual])
    totals = np.cumsum(y, axis=1)  # NaN after a missing day
    blocks = {}
    for name, forecasts in (("lstm", lstm), ("lgbm", lgbm)):
        blocks[name] = (np.concatenate([f.daily[:, :horizon] for f in forecasts]),
                        np.concatenate([f.cumulative[:, :horizon] for f in forecasts]),
                        np.concatenate([f.mean[:, :horizon] for f in forecasts]))
    every = np.ones(y.shape, dtype=bool)
    daily, cumulative, mean, report = _fit_cells(blocks, y, totals, every, every,
                                                 levels, integer, shrinks,
                                                 falls)
    report = {"val_origins": float(len(actual)), **report}
    plain = CombinationWeights(tuple(float(x) for x in levels), daily, cumulative, mean, report)
    if classes is not None:
        return _class_weights(plain, blocks, y, totals, classes, len(actual), integer,
                              shrinks, falls)
    if promo is None or len(promo) != len(actual):
        return plain
    on = np.concatenate([np.asarray(p, dtype=bool)[:, :horizon] for p in promo])
    on_span = np.logical_or.accumulate(on, axis=1)
    seen = np.isfinite(y)
    days_on, days_off = int(np.sum(on & seen)), int(np.sum(~on & seen))
    if min(days_on, days_off) < MIN_PROMO_DAYS:
        return dataclasses.replace(plain, report={**report, "val_promo_days": float(days_on)})
    parts = []
    for cells, spans in ((~on, ~on_span), (on, on_span)):
        d, c, m, r = _fit_cells(blocks, y, totals, cells, spans, levels, integer, shrinks,
                                falls)
        if np.sum(spans & np.isfinite(totals)) < MIN_PROMO_DAYS:
            c = cumulative  # too few steps to learn this group's cumulative weights
        parts.append((d, c, m, r))
    (d_off, c_off, m_off, r_off), (d_on, c_on, m_on, r_on) = parts
    split = {f"{k}_promo": v for k, v in r_on.items()}
    split.update({f"{k}_no_promo": v for k, v in r_off.items()})
    split.update(val_promo_days=float(days_on), val_no_promo_days=float(days_off))
    return CombinationWeights(plain.levels, d_off, c_off, m_off, {**report, **split},
                              CombinationWeights(plain.levels, d_on, c_on, m_on))


def _class_weights(plain: CombinationWeights,
                   blocks: dict[str, tuple[FloatArray, FloatArray, FloatArray]],
                   y: FloatArray, totals: FloatArray, classes: Sequence[ClassArray],
                   origins: int, integer: bool, shrink: tuple[float, float], falls: int,
                   ) -> CombinationWeights:
    """`plain` with weights of their own for each demand class seen on enough series
    (`learn_weights`' classes); the classes' series counts per origin in the report."""
    rows = np.concatenate([np.asarray(c, dtype=np.int8).reshape(-1) for c in classes])
    if rows.size != y.shape[0]:
        raise CombinationError("need one demand class per series at each origin")
    levels = np.asarray(plain.levels)
    own: list[CombinationWeights | None] = []
    report = dict(plain.report)
    for code, name in enumerate(CLASSES):
        member = rows == code
        per_origin = float(member.sum()) / origins
        report[f"val_class_{name}_series"] = per_origin
        if per_origin < MIN_CLASS_SERIES:
            own.append(None)
            continue
        cells = np.broadcast_to(member[:, None], y.shape)
        d, c, m, r = _fit_cells(blocks, y, totals, cells, cells, levels, integer, shrink,
                                falls)
        own.append(CombinationWeights(plain.levels, d, c, m, r))
    return dataclasses.replace(plain, report=report, classes=tuple(own))


def _fit_cells(blocks: dict[str, tuple[FloatArray, FloatArray, FloatArray]], y: FloatArray,
               totals: FloatArray, days: BoolArray, spans: BoolArray, levels: FloatArray,
               integer: bool, shrink: tuple[float, float] = (0.0, 0.0),
               fall_origins: int = 0,
               ) -> tuple[tuple[float, ...], tuple[float, ...], float, dict[str, float]]:
    """Daily, cumulative and mean weights learned on the (series, step) cells `days` (daily
    quantiles and mean) and `spans` (cumulative); losses of each part and of the mix (per
    level's own weight); `shrink`: `learn_weights`' (daily, cumulative); `fall_origins` >
    0: the cells are that many origins' (origin-major), and the upper cumulative levels pay
    for their falls (`learn_weights`' cumulative_weights="fall")."""
    report: dict[str, float] = {}
    chosen: dict[str, list[float]] = {"daily": [], "cumulative": []}
    fixed: set[int] = set()  # cumulative levels that paid for their falls: not shrunk
    for b, (block, target, cells) in enumerate((("daily", y, days),
                                                ("cumulative", totals, spans))):
        ok = np.isfinite(target) & cells
        t = target[ok]
        mix = own = peer = 0.0
        for k, tau in enumerate(levels):
            if t.size == 0:
                chosen[block].append(0.5)
                continue
            a_k, b_k = blocks["lstm"][b][..., k][ok], blocks["lgbm"][b][..., k][ok]
            w, m, la, lb = _best(a_k, b_k, partial(_pinball_level, t, tau=float(tau)), integer)
            if block == "cumulative" and fall_origins > 1 and tau >= FALL_LEVELS_FROM:
                w = _best(blocks["lstm"][b][..., k], blocks["lgbm"][b][..., k],
                          partial(_fall_loss, target, ok, None if cells.all() else cells,
                                  float(tau), fall_origins), integer)[0]
                m = _pinball_level(t, _post(w * a_k + (1.0 - w) * b_k, integer), float(tau))
                fixed.add(k)
            chosen[block].append(w)
            mix, own, peer = mix + m, own + la, peer + lb
        report.update({f"{block}_pinball_mix": mix / levels.size,
                       f"{block}_pinball_lstm": own / levels.size,
                       f"{block}_pinball_lightgbm": peer / levels.size})
        toward = shrink[b]
        if toward > 0.0 and t.size:
            a, b_ = blocks["lstm"][b][ok], blocks["lgbm"][b][ok]  # (cells, Q)
            pooled = _best_pooled(a, b_, t, levels, integer)
            chosen[block] = [w if block == "cumulative" and k in fixed
                             else toward * pooled + (1.0 - toward) * w
                             for k, w in enumerate(chosen[block])]
            report[f"{block}_weight_pooled"] = pooled
    ok = np.isfinite(y) & days
    if ok.any():
        w_mean, m, la, lb = _best(blocks["lstm"][2][ok], blocks["lgbm"][2][ok],
                                  partial(_absolute_error, y[ok]), False)
    else:
        w_mean, m, la, lb = 0.5, 0.0, 0.0, 0.0
    report.update({"mean_mae_mix": m, "mean_mae_lstm": la, "mean_mae_lightgbm": lb})
    return (tuple(chosen["daily"]), tuple(chosen["cumulative"]), w_mean,
            {f"val_{k}": v for k, v in report.items()})


def mixed_block(a: QuantileForecast, b: QuantileForecast, weights: CombinationWeights,
                promo: BoolArray | None = None, classes: ClassArray | None = None,
                ) -> FloatArray:
    """The unrounded mix as one block (n, H, 2Q + 1) [daily | cumulative | mean], clipped at
    0, quantiles sorted along the levels: what the mix's calibration learns from and moves.
    `promo` (n, >= H): the forecast days with a planned promotion (None: none); `classes`
    (n,): the series' demand classes (None: unknown, the weights of every series)."""
    horizon = min(a.horizon, b.horizon)
    wd, wc, wm = weights.per_cell(None if promo is None else promo[:, :horizon], classes)
    daily = np.sort(np.maximum(wd * a.daily[:, :horizon] + (1.0 - wd) * b.daily[:, :horizon],
                               0.0), axis=2)
    cum = np.sort(np.maximum(wc * a.cumulative[:, :horizon]
                             + (1.0 - wc) * b.cumulative[:, :horizon], 0.0), axis=2)
    mean = np.maximum(wm * a.mean[:, :horizon] + (1.0 - wm) * b.mean[:, :horizon], 0.0)
    return np.ascontiguousarray(np.concatenate([daily, cum, mean[..., None]], axis=2))


def _same_levels(levels: FloatArray, expected: Sequence[float]) -> bool:
    """np.allclose(levels, expected) at its default tolerances, without its fixed cost
    (~30 us, paid twice per served batch); equal levels (the served case) are a list
    comparison."""
    if levels.ndim == 1 and tuple(levels.tolist()) == tuple(expected):
        return True
    want = np.asarray(expected, dtype=np.float64)
    return levels.shape == want.shape and bool(
        np.all(np.abs(levels - want) <= 1e-8 + 1e-5 * np.abs(want)))


def combine(a: QuantileForecast, b: QuantileForecast, weights: CombinationWeights, *,
            integer: bool, calibration: IntervalCalibration | None = None,
            promo: BoolArray | None = None,
            promo_calibration: IntervalCalibration | None = None,
            classes: ClassArray | None = None) -> QuantileForecast:
    """The mix `weights` x a + (1 - weights) x b (a: the LSTM's, b: LightGBM's forecast of
    the same series and steps), recalibrated by `calibration` (None: as mixed), rounded for
    counts, sorted along the levels. `promo` (n, >= H): the forecast days with a planned
    promotion, which take `weights.promo` when there are such weights (None: none), and
    `promo_calibration` instead of `calibration` when there is one (cumulative levels: the
    steps whose span holds a promotion day). `classes` (n,): each series' demand class,
    which takes `weights.classes`' weights when there are such (None: every series the
    same)."""
    if not (_same_levels(a.levels, weights.levels) and _same_levels(b.levels, weights.levels)):
        raise CombinationError("both forecasts must have the weights' levels")
    if calibration is not None:
        q = a.levels.size
        block = mixed_block(a, b, weights, promo, classes)
        on = None if promo is None else promo[:, : block.shape[1]]
        moved = None
        if promo_calibration is not None and on is not None and on.any():
            moved = block.copy()
            promo_calibration.apply(moved, integer=integer)
        calibration.apply(block, integer=integer)
        if moved is not None and on is not None:
            spans = np.logical_or.accumulate(on, axis=1)
            block[..., :q] = np.where(on[..., None], moved[..., :q], block[..., :q])
            block[..., q : 2 * q] = np.where(spans[..., None], moved[..., q : 2 * q],
                                             block[..., q : 2 * q])
        daily, cum = np.sort(block[..., :q], axis=2), np.sort(block[..., q : 2 * q], axis=2)
        cum = np.maximum.accumulate(np.maximum(cum, daily[:, :1]), axis=1)
        return QuantileForecast.trusted(a.levels.copy(), daily, cum, block[..., 2 * q])
    horizon = min(a.horizon, b.horizon)
    wd, wc, wm = weights.per_cell(None if promo is None else promo[:, :horizon], classes)
    daily = _post(wd * a.daily[:, :horizon] + (1.0 - wd) * b.daily[:, :horizon], integer)
    cum = _post(wc * a.cumulative[:, :horizon] + (1.0 - wc) * b.cumulative[:, :horizon],
                integer)
    mean = np.maximum(wm * a.mean[:, :horizon] + (1.0 - wm) * b.mean[:, :horizon], 0.0)
    daily, cum = np.sort(daily, axis=2), np.sort(cum, axis=2)
    cum = np.maximum.accumulate(np.maximum(cum, daily[:, :1]), axis=1)
    return QuantileForecast.trusted(a.levels.copy(), daily, cum, mean)


def learn_calibration(lstm: Sequence[QuantileForecast], lgbm: Sequence[QuantileForecast],
                      actual: Sequence[FloatArray], weights: CombinationWeights, *,
                      integer: bool, blocks: str = DEFAULT_MIX_CALIBRATION,
                      promo: Sequence[BoolArray] | None = None,
                      cells: Sequence[BoolArray] | None = None,
                      classes: Sequence[ClassArray] | None = None,
                      ) -> IntervalCalibration | None:
    """The mix's interval calibration from both models' forecasts at the validation origins
    (as `learn_weights` reads them) mixed with `weights` (`promo`: per origin, the forecast
    days with a planned promotion, as `learn_weights` takes them): daily tails (quartiles
    and median keep their levels) and, with `blocks="both"`, every cumulative level. None
    for "off". `cells`: per origin (n, H), the days it is learned on (cumulative: steps
    whose span holds one of them); None: all. `classes`: per origin, the series' demand
    classes (n,) for weights with class weights (None: every series mixed alike)."""
    if blocks not in MIX_CALIBRATIONS:
        raise CombinationError(f"mix_calibration must be one of {MIX_CALIBRATIONS}, "
                               f"got {blocks!r}")
    if blocks == "off":
        return None
    levels = weights.levels
    q = len(levels)
    flags: Sequence[BoolArray | None] = [None] * len(lstm) if promo is None else promo
    kinds: Sequence[ClassArray | None] = [None] * len(lstm) if classes is None else classes
    mixed = [mixed_block(a, b, weights, p, c)
             for a, b, p, c in zip(lstm, lgbm, flags, kinds, strict=True)]
    horizon = mixed[0].shape[1]
    out = np.concatenate(mixed)
    y = np.concatenate([np.asarray(a, dtype=np.float64)[:, :horizon] for a in actual])
    totals = np.cumsum(y, axis=1)  # NaN after a missing day
    if cells is not None:  # the rest are left out of the fit, as unknown days are
        on = np.concatenate([np.asarray(c, dtype=bool)[:, :horizon] for c in cells])
        y = np.where(on, y, np.nan)
        totals = np.where(np.logical_or.accumulate(on, axis=1), totals, np.nan)
    daily, report = fit_levels(out[..., :q].reshape(-1, q), y.reshape(-1), levels,
                               integer=integer, tails_only=True)
    full = {f"val_daily_coverage_{k}": v for k, v in report.items()}
    cumulative = None
    if blocks == "both":
        cumulative, report = fit_levels(out[..., q : 2 * q].reshape(-1, q),
                                        totals.reshape(-1), levels, integer=integer)
        full.update({f"val_cumulative_coverage_{k}": v for k, v in report.items()})
    full["val_origins"] = float(len(actual))
    return IntervalCalibration(tuple(levels), tuple(float(s) for s in daily),
                               None if cumulative is None
                               else tuple(float(s) for s in cumulative), full)


def promotion_days(covariates: Covariates | None, last_day: ArrayLike,
                   horizon: int) -> BoolArray | None:
    """(n, horizon): the days after each series' `last_day` ((n,) dates) with a planned
    promotion in `covariates` (the same n series; None: nothing planned, gives None)."""
    if covariates is None:
        return None
    days = np.asarray(last_day, dtype="datetime64[D]")
    out = np.zeros((covariates.n_series, horizon), dtype=bool)
    for day in np.unique(days):
        rows = np.flatnonzero(days == day)
        promo, _ = covariates.span(day + np.timedelta64(1, "D"), horizon)
        out[rows] = promo[rows] > 0
    return out


Mix = tuple[CombinationWeights, IntervalCalibration | None, IntervalCalibration | None]
"""What the validation origins teach the mix: its weights, its calibration and (None: the
same for every day) the promotion days' own calibration."""


@dataclass(frozen=True)
class ValidationForecasts:
    """Both parts' forecasts at each validation origin (n series x H steps), what followed
    (n, H), the forecast days with a planned promotion (n, H) (None: no covariates) and the
    series' demand classes at the origin (n,) (None: not read): what the weights and the
    mix's calibration are learned from."""

    lstm: list[QuantileForecast]
    lightgbm: list[QuantileForecast]
    actual: list[FloatArray]
    promo: list[BoolArray] | None
    classes: list[ClassArray] | None = None


def ring_windows(state: SeriesState) -> FloatArray:
    """(n, RING_DAYS) the days each series' state carries, oldest first (NaN: none)."""
    from forecasting.lstm.features import RING_DAYS

    if state.ring is None:
        raise CombinationError("the LSTM state carries no day ring (config.year_ago off)")
    out: FloatArray = state.ring.span(RING_DAYS)
    return out


def state_classes(state: SeriesState) -> ClassArray:
    """(n,) each series' demand class from the last `CLASS_DAYS` days its ring carries."""
    return demand_classes(ring_windows(state)[:, -CLASS_DAYS:])


class LSTMLightGBMForecaster(IncrementalForecaster["SeriesState"]):
    """The LSTM and LightGBM, mixed per level (module docstring). Speaks the LSTM's
    incremental contract: its state is the LSTM's, LightGBM reads the state's day ring."""

    name = "lstm_lgbm"
    version = 1
    fits = True
    uses_covariates = True  # its LightGBM part reads them
    cold_start_warmup_days = 182  # the LSTM's (forecasting.lstm.forecaster)

    def __init__(self, lstm: ServedLSTM, lightgbm: LightGBMForecaster | None = None,
                 weights: CombinationWeights | None = None, *, model_id: str | None = None,
                 lightgbm_options: dict[str, Any] | None = None,
                 calibration: IntervalCalibration | None = None,
                 mix_calibration: str = DEFAULT_MIX_CALIBRATION,
                 promo_weights: bool = DEFAULT_PROMO_WEIGHTS,
                 promo_calibration: IntervalCalibration | None = None,
                 split_calibration: bool = DEFAULT_SPLIT_CALIBRATION,
                 weight_shrink: float = DEFAULT_WEIGHT_SHRINK,
                 cumulative_weight_shrink: float | None = DEFAULT_CUMULATIVE_WEIGHT_SHRINK,
                 cumulative_weights: str = DEFAULT_CUMULATIVE_WEIGHTS,
                 class_weights: bool = DEFAULT_CLASS_WEIGHTS) -> None:
        super().__init__(lstm.levels.tolist(), end_day=lstm.end_day)
        if not lstm.config.year_ago:
            raise CombinationError("lstm_lgbm serves LightGBM from the LSTM's day ring: "
                                   "the LSTM config needs year_ago on")
        self.lstm = lstm
        self.lightgbm = lightgbm
        self.weights = weights
        self.model_id = model_id
        self.lightgbm_options = dict(lightgbm_options or {})
        if mix_calibration not in MIX_CALIBRATIONS:
            raise CombinationError(f"mix_calibration must be one of {MIX_CALIBRATIONS}, "
                                   f"got {mix_calibration!r}")
        # What `fit` learns (MIX_CALIBRATIONS); `calibration`: the learned (or loaded) one,
        # None: the plain mix (an artifact from before the mix was calibrated serves so).
        self.mix_calibration = mix_calibration
        self.calibration = calibration
        # What `fit` learns: weights of their own for days with a planned promotion when the
        # validation has covariates (`learn_weights`); a loaded model serves what it holds.
        self.promo_weights = promo_weights
        # With promotion weights, `split_calibration`: promotion days' calibration learned
        # on them alone (`promo_calibration`; None: one calibration for every day).
        self.split_calibration = split_calibration
        self.promo_calibration = promo_calibration
        # What `fit` learns: each level's weight shrunk this share toward its block's pooled
        # one (`learn_weights`); a loaded model serves the weights it holds.
        if not 0.0 <= weight_shrink <= 1.0:
            raise CombinationError(f"weight_shrink must lie in [0, 1], got {weight_shrink}")
        self.weight_shrink = float(weight_shrink)
        # ... and the cumulative block's (None: weight_shrink)
        if cumulative_weight_shrink is not None and not 0.0 <= cumulative_weight_shrink <= 1.0:
            raise CombinationError("cumulative_weight_shrink must lie in [0, 1], got "
                                   f"{cumulative_weight_shrink}")
        self.cumulative_weight_shrink = (None if cumulative_weight_shrink is None
                                         else float(cumulative_weight_shrink))
        # What `fit` learns for the cumulative block (`CUMULATIVE_WEIGHTS`, `learn_weights`).
        self.cumulative_weights = _cumulative_weights(cumulative_weights)
        # What `fit` learns: weights of their own per demand class (`learn_weights`'
        # classes; with promotion weights on too, those win); a loaded model serves what
        # its weights hold.
        self.class_weights = bool(class_weights)
        self.fit_info: dict[str, float] = {}
        self._threads: int | None = None  # cap_threads', for a LightGBM part fitted later

    @property
    def config(self) -> LSTMConfig:
        """The LSTM part's config (horizon, levels, calendar: what both parts forecast)."""
        return self.lstm.config

    @property
    def needs_fit(self) -> bool:
        """True until both parts and the weights are there."""
        return self.lstm.needs_fit or self.lightgbm is None or self.weights is None

    @property
    def fit_metrics(self) -> dict[str, float]:
        """The LSTM's training metrics, LightGBM's rows and seconds, the weights' report."""
        out = {f"lstm_{k}": v for k, v in self.lstm.fit_metrics.items()}
        out.update(self.fit_info)
        if self.weights is not None:
            out.update({f"combination_{k}": v for k, v in self.weights.report.items()})
        if self.calibration is not None:
            out.update({f"mix_calibration_{k}": v for k, v in self.calibration.report.items()})
        if self.promo_calibration is not None:
            out.update({f"mix_calibration_promo_{k}": v
                        for k, v in self.promo_calibration.report.items()})
        return out

    def cap_threads(self, threads: int) -> None:
        """Cap both parts' threads: the LSTM's (torch or BLAS) and LightGBM's predict (also
        of a LightGBM part fitted later)."""
        self.lstm.cap_threads(threads)
        self._threads = int(threads)
        if self.lightgbm is not None:
            self.lightgbm.cap_threads(threads)

    def prepare_serving(self) -> None:
        """The LightGBM part's boosters compiled (`LightGBMForecaster.prepare_serving`)."""
        if self.lightgbm is not None:
            self.lightgbm.prepare_serving()

    def _new_lightgbm(self) -> LightGBMForecaster:
        from forecasting.lightgbm_peer import LightGBMForecaster

        options = {"calendar": self.lstm.config.calendar, **self.lightgbm_options}
        model = LightGBMForecaster(self.lstm.config.horizon, levels=self.lstm.levels.tolist(),
                                   end_day=self.end_day, **options)
        if self._threads is not None:
            model.cap_threads(self._threads)
        return model

    def fit(self, panel: Panel) -> Self:
        """Train the LSTM on `panel`; fit LightGBM on the days before the LSTM's validation
        days and learn the weights on the validation origins; refit LightGBM on `panel`."""
        import time

        started = time.perf_counter()
        self.lstm.fit(panel)
        self.fit_peer(panel)
        self.fit_info["train_seconds"] = time.perf_counter() - started
        return self

    def fit_peer(self, panel: Panel) -> Self:
        """With the LSTM already trained on `panel` (`fit`, or `train_lstm` with its time
        cap and callbacks): learn the weights on its validation days and fit LightGBM."""
        import time

        started = time.perf_counter()
        self.model_id = None
        t0 = time.perf_counter()
        self.weights, self.calibration, self.promo_calibration = self.validation_fit(panel)
        weights_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.lightgbm = self._new_lightgbm().fit(panel)
        self.fit_info = {"lightgbm_rows": self.lightgbm.fit_metrics.get("rows", 0.0),
                         "lightgbm_seconds": time.perf_counter() - t0,
                         "weights_seconds": weights_seconds,
                         "train_seconds": time.perf_counter() - started}
        return self

    def validation_fit(self, panel: Panel) -> Mix:
        """Weights, then the mix's calibration (`mix_calibration`), from the fitted LSTM and
        a LightGBM fitted on `panel` before the LSTM's validation days (as trained:
        `config.val_days`), at every validation origin whose horizon lies in them. Equal
        weights and no calibration when there is no such origin. (weights, calibration,
        promotion days' calibration)."""
        found = self.validation_forecasts(panel)
        if found is None:
            return CombinationWeights.equal(self.lstm.config.levels), None, None
        return self.learn_mix(found)

    def validation_forecasts(self, panel: Panel) -> ValidationForecasts | None:
        """Both parts' forecasts at the validation origins (`validation_fit`), what followed
        and the forecast days' planned promotions (None without covariates); None when the
        history holds no validation origin."""
        cfg = self.lstm.config
        big_h, length = cfg.horizon, panel.n_days
        # the LSTM's own mix window (config.mix_days: days it neither trained nor stopped
        # on) when it was trained with one, else its early-stopping days
        first = length - 1 - (cfg.mix_days or cfg.val_days)
        last = length - 1 - big_h
        if first < big_h + 8 or last < first:
            return None
        early = self._new_lightgbm().fit(panel.head(first + 1))
        y, dates, cov = panel.values, panel.dates, panel.covariates
        flags = None  # each day's promotion flag, for an LSTM that reads them
        if cov is not None and cfg.promo_inputs:
            flags, _ = cov.span(panel.start, length)
        own = None  # each day's own holiday flag, for an LSTM that reads them
        if cov is not None and cfg.data_holidays:
            own = cov.holiday_rows(np.asarray(panel.start), length)
        state = self.lstm.encode(y[:, : first + 1], dates[first],
                                 promo=None if flags is None else flags[:, : first + 1],
                                 holiday=None if own is None else own[:, : first + 1])
        ours, theirs, actual, promo, classes = [], [], [], [], []
        for t in range(first, last + 1):
            classes.append(state_classes(state))
            ours.append(self._lstm_forecast(state, big_h, cov))
            theirs.append(self._lightgbm_forecast(early, state, big_h, cov))
            actual.append(y[:, t + 1 : t + 1 + big_h])
            promo.append(promotion_days(cov, state.last_day, big_h))
            if t < last:
                state = self.lstm.update(state, y[:, t + 1], dates[t + 1], consume=True,
                                         promo=None if flags is None else flags[:, t + 1],
                                         holiday=None if own is None else own[:, t + 1])
        known = [p for p in promo if p is not None]
        return ValidationForecasts(ours, theirs, actual,
                                   known if early.covariates_used and known else None,
                                   classes)

    def learn_mix(self, found: ValidationForecasts, *, promo_weights: bool | None = None,
                  split_calibration: bool | None = None,
                  shrink: float | None = None,
                  cumulative_shrink: float | None = None,
                  cumulative_weights: str | None = None,
                  class_weights: bool | None = None) -> Mix:
        """Weights, then the mix's calibration, from `validation_forecasts`; `promo_weights`
        (None: the model's own): promotion days weighted on their own when known;
        `split_calibration` (None: the model's own): with promotion weights, the promotion
        days' calibration learned on them alone, the rest's on the days without; `shrink`
        (None: the model's `weight_shrink`), `cumulative_shrink` (None: the model's
        `cumulative_weight_shrink`, or `shrink` when given alone), `cumulative_weights`
        (None: the model's):
        `learn_weights`'; `class_weights` (None: the model's own): weights per demand class
        (not with promotion days weighted on their own)."""
        split = self.promo_weights if promo_weights is None else promo_weights
        promo = found.promo if split else None
        by_class = self.class_weights if class_weights is None else class_weights
        classes = found.classes if by_class and promo is None else None
        integer = self.lstm.config.integer_demand
        weights = learn_weights(found.lstm, found.lightgbm, found.actual, integer=integer,
                                promo=promo,
                                shrink=self.weight_shrink if shrink is None else shrink,
                                cumulative_shrink=(cumulative_shrink
                                                   if cumulative_shrink is not None
                                                   or shrink is not None
                                                   else self.cumulative_weight_shrink),
                                cumulative_weights=(self.cumulative_weights
                                                    if cumulative_weights is None
                                                    else cumulative_weights),
                                classes=classes)
        if weights.promo is None:
            promo = None  # too few promotion days: one mix, as without covariates
        apart = self.split_calibration if split_calibration is None else split_calibration
        if not apart or promo is None:
            return weights, learn_calibration(found.lstm, found.lightgbm, found.actual,
                                              weights, integer=integer,
                                              blocks=self.mix_calibration, promo=promo,
                                              classes=classes), None
        off, on = (learn_calibration(found.lstm, found.lightgbm, found.actual, weights,
                                     integer=integer, blocks=self.mix_calibration,
                                     promo=promo, cells=cells)
                   for cells in ([~p for p in promo], promo))
        return weights, off, on

    # --- the incremental contract: the LSTM's state ----------------------------------------
    def encode(self, windows: ArrayLike, end_days: ArrayLike,
               warmup_days: int | None = None, *,
               promo: ArrayLike | None = None,
               holiday: ArrayLike | None = None) -> SeriesState:
        """The LSTM's state after each window (its day ring feeds LightGBM); `promo` (n, T):
        the days' promotion flags for an LSTM that reads them; `holiday` (n, T): their own
        holiday flags for one that reads them (`data_holidays`)."""
        return self.lstm.encode(windows, end_days, warmup_days, promo=promo, holiday=holiday)

    def update(self, state: SeriesState, values: ArrayLike, days: ArrayLike | None = None,
               *, consume: bool = False, promo: ArrayLike | None = None,
               holiday: ArrayLike | None = None) -> SeriesState:
        """One new bucket per series into the LSTM's state (and its day ring)."""
        return self.lstm.update(state, values, days, consume=consume, promo=promo,
                                holiday=holiday)

    @property
    def reads_holidays(self) -> bool:
        """The LSTM part's state reads the data's own holiday flags."""
        return bool(self.lstm.config.data_holidays)

    def keyed_states(self, max_states: int) -> KeyedStates[SeriesState]:
        """The LSTM's keyed store: the state is all a series carries."""
        return self.lstm.keyed_states(max_states)

    def _lightgbm_forecast(self, model: LightGBMForecaster, state: SeriesState,
                           horizon: int, covariates: Covariates | None = None
                           ) -> QuantileForecast:
        """LightGBM's forecast from each series' ring, each from its own end day (the rows
        of each day as `predict` forecasts them, one run of the boosters for all);
        `covariates`: the known-in-advance covariates of the state's series (None: none)."""
        return model.forecast_from(ring_windows(state), horizon, state.last_day, covariates)

    def _lstm_forecast(self, state: SeriesState, horizon: int,
                       covariates: Covariates | None) -> QuantileForecast:
        """The LSTM part's forecast, with the planned promotions (and the data's own
        holidays) when it reads them."""
        cfg = self.lstm.config
        if covariates is None or not (cfg.promo_inputs or cfg.data_holidays):
            return self.lstm.forecast(state, horizon)
        return self.lstm.forecast_known(state, horizon, covariates)

    def _predict_known(self, windows: FloatArray, horizon: int, end_days: ArrayLike | None,
                       covariates: Covariates) -> QuantileForecast:
        """`predict` with covariates: the forecast from the state after each window (an
        LSTM that reads promotions reads the windows' days' flags)."""
        from forecasting.lstm.serving import window_holiday, window_promo

        ends = self.window_ends(end_days)
        promo = window_promo(self.lstm.config, covariates, ends, *windows.shape)
        holiday = window_holiday(self.lstm.config, covariates, ends, *windows.shape)
        return self.forecast(self.encode(windows, ends, promo=promo, holiday=holiday),
                             horizon, covariates=covariates)

    def forecast_known(self, state: SeriesState, horizon: int,
                       covariates: Covariates) -> QuantileForecast:
        """`forecast` with the series' planned promotions (LightGBM reads them; the LSTM
        with `config.promo_inputs`)."""
        return self.forecast(state, horizon, covariates=covariates)

    def forecast(self, state: SeriesState, horizon: int, *,
                 covariates: Covariates | None = None) -> QuantileForecast:
        """The mix of the LSTM's forecast from `state` and LightGBM's from its day ring; past
        the trained horizon the mix is extended as the LSTM extends its own. `covariates`:
        the series' known-in-advance covariates for LightGBM and an LSTM that reads
        promotions (None: nothing planned)."""
        if self.lightgbm is None or self.weights is None:
            raise CombinationError("lstm_lgbm.forecast before fit (or load)")
        big_h = self.lstm.config.horizon
        steps = min(horizon, big_h)
        promo = (None if self.weights.promo is None
                 else promotion_days(covariates, state.last_day, steps))
        classes = None if self.weights.classes is None else state_classes(state)
        mixed = combine(self._lstm_forecast(state, steps, covariates),
                        self._lightgbm_forecast(self.lightgbm, state, steps, covariates),
                        self.weights, integer=self.lstm.config.integer_demand,
                        calibration=self.calibration, promo=promo,
                        promo_calibration=self.promo_calibration, classes=classes)
        if horizon <= big_h:
            return mixed
        from forecasting.lstm.serving import extend

        daily, cumulative, mean = extend(mixed.daily.copy(), mixed.cumulative.copy(),
                                          mixed.mean.copy(), horizon)
        return QuantileForecast(self._levels, daily[:, :horizon], cumulative[:, :horizon],
                                mean[:, :horizon])

    def __repr__(self) -> str:
        return f"LSTMLightGBMForecaster(version={self.model_version!r})"


# --- artifact ------------------------------------------------------------------------------
def save_combination(model: LSTMLightGBMForecaster, out_dir: str | Path, *,
                     data_fingerprint: str, data: dict[str, Any] | None = None,
                     metrics: dict[str, float] | None = None) -> str:
    """Write both parts (`lstm/`: the LSTM's artifact, `lightgbm/`: the boosters) and the
    weights; metadata.json (the LSTM's artifact format, so version polling reads it) names
    the model and one id over all three. Returns the model id."""
    from forecasting.lstm.artifact import save_artifact
    from forecasting.lstm.artifact_files import ARTIFACT_FORMAT, METADATA_FILE
    from forecasting.lstm.forecaster import LSTMForecaster

    if model.lightgbm is None or model.weights is None:
        raise CombinationError("save_combination before fit")
    if not isinstance(model.lstm, LSTMForecaster):
        raise CombinationError("save_combination writes a model trained here (torch); this "
                               "one's LSTM part was loaded for numpy serving")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = save_artifact(model.lstm, out / LSTM_DIR, data_fingerprint=data_fingerprint,
                         data=data, metrics=dict(model.lstm.fit_metrics))
    texts = model.lightgbm.save(out / LIGHTGBM_DIR)
    weights = model.weights.to_json()
    digest = hashlib.sha256(info.model_id.encode())
    for text in texts:
        digest.update(text.encode())
    digest.update(json.dumps({k: v for k, v in weights.items() if k != "report"},
                             sort_keys=True).encode())
    calibration = None if model.calibration is None else model.calibration.to_json()
    if calibration is not None:  # (without one, ids stay what they were before)
        digest.update(json.dumps({k: v for k, v in calibration.items() if k != "report"},
                                 sort_keys=True).encode())
    promo_cal = (None if model.promo_calibration is None
                 else model.promo_calibration.to_json())
    extra: dict[str, Any] = {}
    if promo_cal is not None:  # (likewise)
        digest.update(json.dumps({k: v for k, v in promo_cal.items() if k != "report"},
                                 sort_keys=True).encode())
        extra["promo_calibration"] = promo_cal
    model_id = digest.hexdigest()[:12]
    meta = {"format": ARTIFACT_FORMAT, "model": model.name,
            "model_class_version": model.version, "model_id": model_id,
            "model_version": f"{model.name}-{model.version}+{model_id}",
            "created_at": datetime.now(UTC).isoformat(),
            "parts": {"lstm": {"dir": LSTM_DIR, "model_id": info.model_id},
                      "lightgbm": {"dir": LIGHTGBM_DIR,
                                   "config": dataclasses.asdict(model.lightgbm.config)}},
            "weights": weights, "calibration": calibration, **extra,
            "horizon": model.lstm.config.horizon,
            "levels": list(model.lstm.config.levels), "data_fingerprint": data_fingerprint,
            "data": dict(data or {}), "metrics": dict(metrics or model.fit_metrics)}
    (out / COMBINATION_FILE).write_text(
        json.dumps({**weights, "calibration": calibration, **extra}, indent=2) + "\n")
    (out / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n")
    model.model_id = model_id
    return model_id


def load_combination(path: str | Path, *, device: str = "auto",
                     backend: str | None = None) -> LSTMLightGBMForecaster:
    """A combined forecaster saved by `save_combination`; its LSTM part loads through the
    LSTM's own registry factory (`make_lstm(path)`, with `backend` when one is given)."""
    from forecasting.lightgbm_peer import LightGBMForecaster
    from forecasting.lstm import make_lstm
    from forecasting.lstm.artifact_files import ArtifactError, read_metadata

    meta = read_metadata(path)
    if meta.get("model") != LSTMLightGBMForecaster.name:
        raise ArtifactError(f"{path}: holds a {meta.get('model')!r} model, not lstm_lgbm")
    root = Path(path)
    chosen: dict[str, Any] = {} if backend is None else {"backend": backend}
    lstm = _served_lstm(make_lstm(str(root / meta["parts"]["lstm"]["dir"]), device=device,
                                  **chosen))
    lightgbm = LightGBMForecaster.load(root / meta["parts"]["lightgbm"]["dir"],
                                       end_day=lstm.end_day)
    weights = CombinationWeights.from_json(meta["weights"])
    # An artifact from before the mix was calibrated has none: the plain mix (identity).
    calibration = IntervalCalibration.from_json(meta.get("calibration"))
    promo_calibration = IntervalCalibration.from_json(meta.get("promo_calibration"))
    return LSTMLightGBMForecaster(lstm, lightgbm, weights, model_id=str(meta["model_id"]),
                                  calibration=calibration,
                                  promo_calibration=promo_calibration,
                                  split_calibration=promo_calibration is not None,
                                  mix_calibration="off" if calibration is None
                                  else DEFAULT_MIX_CALIBRATION if calibration.cumulative
                                  else "daily")


def make_lstm_lgbm(path: str | None = None, *, device: str = "auto",
                   config: LSTMConfig | None = None, horizon: int | None = None,
                   progress: bool = False, **overrides: Any) -> Forecaster:
    """Registry factory: `path=DIR` loads the model the directory holds (the served default,
    so a worker configured for it also serves an `lstm` directory: `model_dir`); otherwise an
    untrained one whose LSTM is `make_lstm(config=..., **overrides)` (horizon: the
    config's)."""
    from forecasting.lstm import make_lstm

    backend = overrides.pop("backend", None)  # how a loaded LSTM part serves (its factory's)
    mix_calibration = str(overrides.pop("mix_calibration", DEFAULT_MIX_CALIBRATION))
    promo_weights = bool(overrides.pop("promo_weights", DEFAULT_PROMO_WEIGHTS))
    split_calibration = bool(overrides.pop("split_calibration", DEFAULT_SPLIT_CALIBRATION))
    weight_shrink = float(overrides.pop("weight_shrink", DEFAULT_WEIGHT_SHRINK))
    cumulative_shrink = overrides.pop("cumulative_weight_shrink",
                                      DEFAULT_CUMULATIVE_WEIGHT_SHRINK)
    cumulative_weights = str(overrides.pop("cumulative_weights", DEFAULT_CUMULATIVE_WEIGHTS))
    class_weights = bool(overrides.pop("class_weights", DEFAULT_CLASS_WEIGHTS))
    # lightgbm_KEY=VALUE: the LightGBM part's config KEY (e.g. a simulation's A/B of it)
    lgbm = {k.removeprefix("lightgbm_"): overrides.pop(k) for k in list(overrides)
            if k.startswith("lightgbm_")}
    if path is not None:
        from forecasting.model_dir import load_model_dir

        return load_model_dir(path, device=device, backend=backend)
    if horizon is not None and config is None:
        overrides.setdefault("horizon", int(horizon))
    if config is None:
        overrides.setdefault("mix_days", DEFAULT_MIX_DAYS)
    return LSTMLightGBMForecaster(_served_lstm(make_lstm(device=device, config=config,
                                                         progress=progress, **overrides)),
                                  mix_calibration=mix_calibration,
                                  promo_weights=promo_weights,
                                  split_calibration=split_calibration,
                                  weight_shrink=weight_shrink,
                                  cumulative_weight_shrink=(None if cumulative_shrink is None
                                                            else float(cumulative_shrink)),
                                  cumulative_weights=cumulative_weights,
                                  class_weights=class_weights,
                                  lightgbm_options=lgbm)


def _served_lstm(model: Forecaster) -> ServedLSTM:
    """`model` as the LSTM part (either backend), or a CombinationError naming what it is."""
    from forecasting.lstm.numpy_forecaster import NumpyLSTMForecaster

    if isinstance(model, NumpyLSTMForecaster):
        return model
    # A torch-served part's module (and torch) is loaded already; checking a numpy-served
    # one must not import torch, which a base install (no `train` extra) lacks.
    if "forecasting.lstm.forecaster" in sys.modules:
        from forecasting.lstm.forecaster import LSTMForecaster

        if isinstance(model, LSTMForecaster):
            return model
    raise CombinationError(f"lstm_lgbm needs an LSTM part, got {model!r}")
