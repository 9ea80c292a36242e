"""LightGBM global peer: one gradient-boosted model per output over lag features (optional).

The M5 competition was won by global LightGBM models on lag and calendar features; this is
that peer, kept small enough to refit at every backtest origin on a 2-core CPU.

Design (see `LightGBMForecaster`):
- direct multi-horizon: the step h (1..horizon) is a feature, so one model covers all steps
  and no forecast is fed back into the lags;
- quantiles come from one LightGBM model per level with the quantile (pinball) objective,
  not from a point model plus residual quantiles. Demand here is intermittent and lumpy
  (UCI: 44% zero days): a pooled residual distribution would give every series the same
  shape of spread, while per-level models learn that a series that sold on 3 of the last
  28 days has q0.1 = 0 and a fat right tail, and that spread grows with the level;
- the cumulative (lead-time) quantiles are learned directly: every training origin also
  yields "average daily demand over the next h days" rows (feature `kind` = 1) for the
  same models, so the total's quantiles are not a sum of daily quantiles;
- the mean comes from one more model with the Tweedie objective (power 1.8; as in most M5
  solutions): a deviance minimised by the mean of non-negative targets that, unlike L2 or
  Poisson, lets rare huge orders pull the fit less. On the UCI data's first backtest fold
  the mean model's MASE was L2 1.167, Poisson 0.993, Tweedie(1.5) 0.926 (240k rows), Tweedie(1.8)
  0.880 (120k rows).
Targets and demand features are divided by the series' recent level (`lag_features`).

Serving: the stream's loaded model predicts through its boosters compiled to native code
(`prepare_serving`, `forecasting.compiled_trees`: lleaves; LightGBM's predict where that is
unavailable), on
`cap_threads(n)` threads (the stream's inferencer caps it to 1: uncapped, LightGBM's predict
spins an OpenMP team over every core for a few dozen rows).
"""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

from forecasting._numeric import FloatArray
from forecasting.base import QUANTILE_LEVELS, Forecaster, QuantileForecast, yesterday
from forecasting.covariates import Covariates
from forecasting.data import Panel
from forecasting.errors import ForecastingError, InvalidWindowError
from forecasting.lag_features import (
    FEATURE_NAMES,
    HOLIDAY_FEATURES,
    PRICE_FEATURES,
    PROMO_FEATURES,
    SCALE_DAYS,
    LagTable,
    lag_features,
    serving_features,
)

if TYPE_CHECKING:
    from forecasting.compiled_trees import TreePredictor

__all__ = ["LightGBMConfig", "LightGBMForecaster"]


@dataclass(frozen=True)
class LightGBMConfig:
    """Training sample and booster settings."""

    horizon: int = 14
    train_days: int = 364  # origins from the last N days before the cut-off feed training
    max_rows: int = 120_000  # sampled (series, origin) pairs x 2 * horizon rows, at most
    n_estimators: int = 150
    learning_rate: float = 0.08
    num_leaves: int = 31
    min_child_samples: int = 50
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    mean_objective: str = "tweedie"  # LightGBM objective of the mean model
    tweedie_power: float = 1.8
    threads: int = 1
    calendar: str = "uk"
    covariates: bool = True  # use the panel's known-in-advance covariates when it has them
    price_features: bool = False  # ... the price ratio too (dropped: worse on FreshRetailNet)
    # The data's own holidays (`Covariates.holiday`, with covariates): HOLIDAY_FEATURES last.
    # On (benchmarks/README.md, "Data holidays"; served from `shop.calendar`); a panel without
    # the column: the model and its artifact as before.
    data_holidays: bool = True
    # True: training drops the rows whose target is censored (`Panel.censored`: a stock-out
    # day, or a cumulative target over one); the features still read the observed sales.
    # A panel without censored days: the rows of before, bit for bit. Off: FreshRetailNet
    # pinball +2.2% (tune), the kept days are the low-demand ones (benchmarks/README.md,
    # "Lever 3").
    censored: bool = False
    # Each quantile booster's leaves hold at least this many rows beyond their level:
    # min_data_in_leaf >= tail_leaf_rows / min(level, 1 - level) (0: min_child_samples alone).
    # A leaf answers with its level's percentile of its rows' residuals: with 50 rows the
    # 0.975 leaf is the largest residual but one, and on lumpy demand (one wholesale order
    # in the window) the top cumulative quantiles jumped 10-80x the SKU's mean from one day
    # to the next; an order-up-to policy keeps every such jump as stock (benchmarks/README
    # "Overstock").
    tail_leaf_rows: int = 10
    # The quantile boosters' scaled targets are clipped, per kind, at this pooled quantile
    # (1.0: off); the mean model trains on them unclipped.
    target_cap_quantile: float = 0.999
    seed: int = 0


class NotFittedError(ForecastingError):
    """predict() before fit()."""


SORTED_ROWS = 64
"""From this many series on, `forecast_from` runs the boosters over the series of each end
day sorted by their level over the last SCALE_DAYS days (the features' scale, whose log is
the most used split), forecasts back in the callers' order: the compiled trees branch alike
on rows of similar scale (4-13% less CPU in the trees on the bench's series, A/B at
load ~5). Each row's
prediction does not depend on the others: the same numbers."""


class LightGBMForecaster(Forecaster):
    """Global LightGBM over lag/rolling/calendar features, quantile objective per level.

    `fit(panel)` trains on origins in the last `train_days` days whose `horizon` days
    of targets are known; `predict(windows, horizon, end_days=day)` forecasts from the end
    of each window (all rows must end on the same day). Series with no observation get
    zeros. When every training value is an integer, quantiles are rounded to integers
    (quantiles of counts are counts), as the LSTM does. `horizon` at predict time must
    not exceed the trained horizon.
    """

    name = "lightgbm"
    version = 1
    fits = True
    uses_covariates = True

    def __init__(self, horizon: int = 14, *, levels: Sequence[float] = QUANTILE_LEVELS,
                 end_day: Callable[[], np.datetime64] = yesterday, **config: Any) -> None:
        super().__init__(levels, end_day=end_day)
        self.config = LightGBMConfig(horizon=int(horizon), **config)
        self._models: list[Any] = []  # [mean, q_1, ..., q_Q]
        self._compiled: list[TreePredictor] | None = None  # the same, as native code
        self._source: Path | None = None  # the directory `load` read (its compiled trees)
        self._threads: int | None = None  # predict's threads (None: LightGBM's default)
        self._integer = False
        self._covariates = False  # trained with COVARIATE_FEATURES
        self._holidays = False  # ... and HOLIDAY_FEATURES
        self.fit_info: dict[str, float] = {}

    # --- training --------------------------------------------------------------------------
    @property
    def needs_fit(self) -> bool:
        """True until `fit` has trained the boosters."""
        return not self._models

    @property
    def fit_metrics(self) -> dict[str, float]:
        """Training rows and seconds of the last `fit`."""
        return dict(self.fit_info)

    @property
    def trees_backend(self) -> str:
        """What predicts the boosters: "compiled" (lleaves) or "lightgbm"."""
        return "compiled" if self._compiled is not None else "lightgbm"

    def cap_threads(self, threads: int) -> None:
        """Predict on at most `threads` threads (LightGBM's `num_threads`, the compiled
        trees' jobs); 1 is fastest per worker for the stream's few dozen rows per call."""
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self._threads = int(threads)

    def compile_trees(self, texts: Sequence[str] | None = None, *,
                      cache_dir: Path | None = None) -> bool:
        """Serve the boosters compiled to native code (`forecasting.compiled_trees`): True
        when they are, False (logged once) when LightGBM's predict goes on serving.
        `texts`: the boosters' model texts when at hand (default: from the boosters)."""
        from forecasting.compiled_trees import ARTIFACT_TREES_DIR, compile_boosters

        if not self._models:
            raise NotFittedError("LightGBMForecaster.compile_trees before fit")
        if texts is None:
            texts = [m.model_to_string() for m in self._models]
        shipped = None if self._source is None else self._source / ARTIFACT_TREES_DIR
        self._compiled = compile_boosters(texts, check=self._models, cache_dir=cache_dir,
                                          artifact_dir=shipped)
        return self._compiled is not None

    def prepare_serving(self) -> None:
        """Serve the boosters compiled (`compile_trees`), once."""
        if self._models and self._compiled is None:
            self.compile_trees()

    def _booster_predict(self, k: int, x: FloatArray) -> FloatArray:
        """Booster `k`'s prediction for the feature rows `x`."""
        if self._compiled is not None:
            return self._compiled[k].predict(x, self._threads)
        booster = self._models[k]
        if self._threads is None:
            return np.asarray(booster.predict(x), dtype=np.float64)
        return np.asarray(booster.predict(x, num_threads=self._threads), dtype=np.float64)

    def _sample(self, panel: Panel) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        """(series, origin) pairs to train on: the last `train_days` origins with full
        targets, after each series' first observation, sampled down to `max_rows`."""
        cfg = self.config
        values = panel.values
        n, length = values.shape
        last = length - 1 - cfg.horizon
        if last < 7:
            raise ValueError(f"need more than {cfg.horizon + 8} days to train, got {length}")
        origins = np.arange(max(0, last - cfg.train_days + 1), last + 1)
        observed = np.isfinite(values)
        first = np.where(observed.any(axis=1), observed.argmax(axis=1), length)
        rows, cols = np.meshgrid(np.arange(n), origins, indexing="ij")
        ok = cols >= first[:, None] + 6  # a week of history at least
        # ... and a week of it inside the scale's window: an origin just after a long gap
        # (17 Rossmann stores miss six months) has no recent level, the scale falls to its
        # floor and targets of 10^5 "levels" wrecked the tail quantiles (Rossmann pinball
        # 3,307 vs the LSTM's 187, with a sound median).
        seen = np.concatenate([np.zeros((n, 1)), np.cumsum(observed, axis=1)], axis=1)
        recent = seen[rows, cols + 1] - seen[rows, np.maximum(cols + 1 - SCALE_DAYS, 0)]
        ok &= recent >= 7
        rows, cols = rows[ok], cols[ok]
        budget = max(1, cfg.max_rows // (2 * cfg.horizon))
        if rows.size > budget:
            pick = np.random.default_rng(cfg.seed).choice(rows.size, budget, replace=False)
            rows, cols = rows[pick], cols[pick]
        return rows.astype(np.intp), cols.astype(np.intp)

    def training_rows(self, panel: Panel) -> tuple[FloatArray, FloatArray, NDArray[np.intp]]:
        """(features, scaled targets, kind) of the sampled training rows of `panel`."""
        cfg = self.config
        values = panel.values
        table = LagTable.of(values)
        pairs, origins = self._sample(panel)
        big_h = cfg.horizon
        steps = np.tile(np.arange(1, big_h + 1), 2)
        kinds = np.repeat([0, 1], big_h)
        rows = np.repeat(pairs, 2 * big_h)
        orig = np.repeat(origins, 2 * big_h)
        step = np.tile(steps, pairs.size)
        kind = np.tile(kinds, pairs.size)
        dates = _dates(panel.dates, big_h)
        cov = None
        if self._covariates and panel.covariates is not None:
            cov = panel.covariates.span(panel.start, dates.size)
        own = None
        if self._holidays and panel.covariates is not None:
            own = panel.covariates.holiday_rows(np.asarray(panel.start), dates.size)
        x, scale = lag_features(table, rows, orig, step, kind, dates, cfg.calendar, cov,
                                cfg.price_features, own)
        padded = np.concatenate([values, np.full((values.shape[0], big_h), np.nan)], axis=1)
        if cfg.censored and panel.censored is not None:  # censored targets: NaN, dropped
            padded[:, : values.shape[1]][panel.censored] = np.nan
        daily = padded[rows, orig + step]
        cum = np.zeros_like(daily)
        for h in range(1, big_h + 1):  # average over the next h days (NaN if any missing)
            cum[step == h] = padded[rows[step == h][:, None],
                                    orig[step == h][:, None] + np.arange(1, h + 1)].mean(axis=1)
        y = np.where(kind == 0, daily, cum) / scale
        ok = np.isfinite(y)
        return x[ok], y[ok], kind[ok]

    def fit(self, panel: Panel) -> Self:
        """Train the mean model and one quantile model per level on `panel`."""
        import lightgbm as lgb

        cfg = self.config
        started = time.perf_counter()
        finite = panel.values[np.isfinite(panel.values)]
        self._integer = bool(finite.size and np.all(finite == np.round(finite)))
        self._covariates = cfg.covariates and panel.covariates is not None
        self._holidays = (self._covariates and cfg.data_holidays
                          and panel.covariates is not None
                          and panel.covariates.holiday is not None)
        x, y, kind = self.training_rows(panel)
        yq = y  # the quantile boosters' targets
        if cfg.target_cap_quantile < 1.0:
            for k in (0, 1):
                rows = kind == k
                if rows.any():
                    cap = float(np.quantile(y[rows], cfg.target_cap_quantile))
                    yq = np.where(rows, np.minimum(yq, cap), yq)
        names = list(self.feature_names)
        params: dict[str, Any] = {
            "learning_rate": cfg.learning_rate, "num_leaves": cfg.num_leaves,
            "min_data_in_leaf": cfg.min_child_samples,
            "feature_fraction": cfg.feature_fraction, "bagging_fraction": cfg.bagging_fraction,
            "bagging_freq": 1, "num_threads": cfg.threads, "seed": cfg.seed, "verbose": -1,
        }
        daily_rows = kind == 0
        # the boosters' leaf minimums differ on the one Dataset: no pre-filter by the first's
        full = lgb.Dataset(x, yq, feature_name=names, free_raw_data=False,
                           params={"feature_pre_filter": False} if cfg.tail_leaf_rows > 0
                           else None)
        daily_set = lgb.Dataset(x[daily_rows], y[daily_rows], feature_name=names)
        mean_params = {**params, "objective": cfg.mean_objective,
                       "tweedie_variance_power": cfg.tweedie_power}
        models: list[Any] = [lgb.train(mean_params, daily_set,
                                       num_boost_round=cfg.n_estimators)]
        for level in self._levels:
            leaf = quantile_leaf_rows(float(level), cfg.min_child_samples, cfg.tail_leaf_rows)
            models.append(lgb.train({**params, "min_data_in_leaf": leaf, "objective": "quantile",
                                     "alpha": float(level)},
                                    full, num_boost_round=cfg.n_estimators))
        self._models, self._compiled, self._source = models, None, None
        self.fit_info = {"rows": float(y.size), "seconds": time.perf_counter() - started}
        return self

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The boosters' inputs: FEATURE_NAMES, + PROMO_FEATURES (+ PRICE_FEATURES) when
        trained with covariates."""
        if not self._covariates:
            return FEATURE_NAMES
        price = PRICE_FEATURES if self.config.price_features else ()
        own = HOLIDAY_FEATURES if self._holidays else ()
        return FEATURE_NAMES + PROMO_FEATURES + price + own

    @property
    def holidays_used(self) -> bool:
        """True when the boosters read the HOLIDAY_FEATURES (`LightGBMConfig.data_holidays`,
        fitted on a panel with a holiday column)."""
        return self._holidays

    @property
    def covariates_used(self) -> bool:
        """True when the boosters read the covariate features (fitted on a panel with them)."""
        return self._covariates

    # --- forecasting -----------------------------------------------------------------------
    def _predict(self, windows: FloatArray, horizon: int,
                 end_days: ArrayLike | None) -> QuantileForecast:
        return self._predict_known(windows, horizon, end_days, None)

    def _predict_known(self, windows: FloatArray, horizon: int, end_days: ArrayLike | None,
                       covariates: Covariates | None) -> QuantileForecast:
        """Forecast from the end of each window; a model trained with covariates reads
        `covariates` over the window's days and the horizon (None: no promotion planned,
        full price)."""
        end_day = np.asarray(self.window_ends(end_days), dtype="datetime64[D]")
        if end_day.ndim:  # one date per row is accepted when all rows agree
            if not np.all(end_day == end_day.flat[0]):
                raise InvalidWindowError("LightGBMForecaster needs one end date for all rows")
            end_day = end_day.flat[0]
        n = windows.shape[0]
        daily, cumulative, mean = self._forecast_rows(windows, horizon, np.full(n, end_day),
                                                      covariates)
        return QuantileForecast(self._levels, daily, cumulative, mean)

    def forecast_from(self, windows: FloatArray, horizon: int, end_days: np.ndarray,
                      covariates: Covariates | None = None) -> QuantileForecast:
        """The serving path: each row of `windows` (n, T) forecast from its own end day
        (`end_days` (n,)), as `predict` would forecast the rows of each day, in one run of
        the boosters. For windows the caller has validated (an LSTM state's day ring): no
        check of the windows or of the forecast (valid by construction).

        The rows run grouped by end day and, from SORTED_ROWS series on, by their recent
        level within a day (their forecasts come back in the callers' order)."""
        n = windows.shape[0]
        if covariates is not None and covariates.n_series != n:
            raise InvalidWindowError(f"covariates hold {covariates.n_series} series, "
                                     f"windows {n}")
        if n == 0:
            return QuantileForecast.zeros(0, horizon, self._levels)
        ends = np.asarray(end_days, dtype="datetime64[D]").reshape(-1)
        one_day = bool((ends == ends[0]).all())
        if one_day and n < SORTED_ROWS:
            daily, cumulative, mean = self._forecast_rows(windows, horizon, ends, covariates)
            return QuantileForecast.trusted(self._levels.copy(), daily, cumulative, mean)
        if n >= SORTED_ROWS:
            recent = windows[:, -SCALE_DAYS:]
            seen = np.isfinite(recent)
            level = np.where(seen, recent, 0.0).sum(axis=1) / np.maximum(seen.sum(axis=1), 1)
            order = np.lexsort((level, ends))  # by day, then level
        else:
            order = np.argsort(ends, kind="stable")
        daily, cumulative, mean = self._forecast_rows(
            windows[order], horizon, ends[order],
            None if covariates is None else covariates.subset(order))
        back = np.empty_like(order)
        back[order] = np.arange(n)
        return QuantileForecast.trusted(self._levels.copy(), daily[back], cumulative[back],
                                        mean[back])

    def _forecast_rows(self, windows: FloatArray, horizon: int, ends: np.ndarray,
                       covariates: Covariates | None
                       ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(daily, cumulative, mean) of rows whose windows end on `ends` (n,), the rows of
        a day next to each other: the features of each day's rows (`serving_features`, the
        rows of `serving_grid`), then every booster once over all rows."""
        if not self._models:
            raise NotFittedError("LightGBMForecaster.predict before fit")
        big_h = self.config.horizon
        if horizon > big_h:
            raise InvalidWindowError(f"horizon {horizon} exceeds the trained horizon {big_h}")
        n = windows.shape[0]
        x3 = np.empty((n, 2 * big_h, len(self.feature_names)))
        scale = np.empty(n)
        cuts = [0, *(np.flatnonzero(ends[1:] != ends[:-1]) + 1).tolist(), n]
        for a, b in itertools.pairwise(cuts):
            known = None if covariates is None else (
                covariates if b - a == n else covariates.subset(np.arange(a, b)))
            scale[a:b] = self._features(windows[a:b], ends[a], big_h, known, x3[a:b])
        x = x3.reshape(n * 2 * big_h, -1)
        preds = np.empty((x.shape[0], len(self._models) - 1))  # (n * 2H, Q)
        for k in range(1, len(self._models)):
            preds[:, k - 1] = self._booster_predict(k, x)
        preds = np.maximum(preds, 0.0).reshape(n, 2, big_h, -1) * scale[:, None, None, None]
        preds = np.sort(preds, axis=3)
        daily = preds[:, 0]
        cumulative = preds[:, 1] * np.arange(1, big_h + 1)[None, :, None]
        daily_rows = x3[:, :big_h].reshape(n * big_h, -1)
        mean = (np.maximum(self._booster_predict(0, daily_rows), 0.0).reshape(n, big_h)
                * scale[:, None])
        if self._integer:
            daily, cumulative = np.round(daily), np.round(cumulative)
        cumulative = np.maximum.accumulate(np.maximum(cumulative, daily[:, :1]), axis=1)
        empty = ~np.isfinite(windows).any(axis=1)
        daily[empty], cumulative[empty], mean[empty] = 0.0, 0.0, 0.0
        return daily[:, :horizon], cumulative[:, :horizon], mean[:, :horizon]

    def _features(self, windows: FloatArray, end_day: np.datetime64, big_h: int,
                  covariates: Covariates | None, out: FloatArray) -> FloatArray:
        """The features of the serving grid of windows ending on `end_day` into `out`
        (n, 2H, F); returns the series' scales (n,)."""
        n, length = windows.shape
        days = end_day - np.arange(length - 1, -1, -1).astype("timedelta64[D]")
        dates = _dates(days, big_h)
        cov = own = None
        if self._covariates:
            known = covariates or Covariates.neutral(n, days[0], dates.size)
            cov = known.span(days[0], dates.size)
            if self._holidays:
                own = known.holiday_rows(np.full(n, days[0]), dates.size)
                own = np.zeros((n, dates.size)) if own is None else own
        _, scale = serving_features(windows, big_h, dates, self.config.calendar, cov,
                                    self.config.price_features, out=out, holiday=own)
        return scale

    # --- persistence -----------------------------------------------------------------------
    def save(self, out_dir: str | Path, *, trees: bool = True) -> list[str]:
        """Write the boosters (LightGBM's text format, which keeps every threshold exactly)
        and the config to `out_dir`; returns the booster files' texts (for fingerprints).
        `trees`: also the boosters compiled to native code (portable objects,
        `forecasting.compiled_trees`) in `out_dir/compiled-trees`, so that a worker that
        loads this directory serves at once instead of compiling at its start (where lleaves
        is not usable or SHELFCAST_COMPILED_TREES=0: logged, not written; the model is
        saved all the same)."""
        if not self._models:
            raise NotFittedError("LightGBMForecaster.save before fit")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        texts = [m.model_to_string() for m in self._models]
        for k, text in enumerate(texts):
            (out / f"booster_{k}.txt").write_text(text)
        config = dataclasses.asdict(self.config)
        if not config["censored"]:  # off (the default): the file of before it
            del config["censored"]
        if not self._holidays:  # none read (no column, or off): the file of before it
            del config["data_holidays"]
        meta = {"config": config, "levels": self._levels.tolist(),
                "integer": self._integer, "boosters": len(texts),
                "covariates": self._covariates}
        if self._holidays:  # (absent: the file of before it)
            meta["holidays"] = True
        (out / "lightgbm.json").write_text(json.dumps(meta, indent=2) + "\n")
        if trees:
            from forecasting.compiled_trees import ARTIFACT_TREES_DIR, compile_boosters

            compile_boosters(texts, check=self._models, cache_dir=out / ARTIFACT_TREES_DIR)
        return texts

    @classmethod
    def load(cls, path: str | Path, *, end_day: Callable[[], np.datetime64] = yesterday,
             compiled: bool = False) -> LightGBMForecaster:
        """A fitted forecaster from a directory written by `save` (a booster may be stored
        gzipped, `booster_K.txt.gz`, as the demo's committed model keeps them). `compiled`:
        its boosters compiled to native code where lleaves can (`compile_trees`: read from
        the directory's `compiled-trees`, as `save` writes it, else from the host's cache,
        else compiled now). A worker gets that through `prepare_serving`; a backtest or
        retrain's champion does not pay it."""
        import lightgbm as lgb

        src = Path(path)
        meta = json.loads((src / "lightgbm.json").read_text())
        cfg = dict(meta["config"])
        cfg.setdefault("data_holidays", False)  # `save` leaves it out when none were read
        horizon = cfg.pop("horizon")
        model = cls(horizon, levels=meta["levels"], end_day=end_day, **cfg)
        texts = [_booster_text(src / f"booster_{k}.txt") for k in range(int(meta["boosters"]))]
        model._models = [lgb.Booster(model_str=text) for text in texts]
        model._integer = bool(meta["integer"])
        model._covariates = bool(meta.get("covariates", False))  # older artifacts: none
        model._holidays = bool(meta.get("holidays", False))
        model._source = src
        if compiled:
            model.compile_trees(texts)
        return model

    def with_config(self, **changes: Any) -> LightGBMForecaster:
        """An unfitted copy with some config fields changed."""
        cfg = dataclasses.asdict(dataclasses.replace(self.config, **changes))
        horizon = cfg.pop("horizon")
        return LightGBMForecaster(horizon, levels=self._levels, end_day=self.end_day, **cfg)

    def __repr__(self) -> str:
        cfg = self.config
        return (f"LightGBMForecaster(horizon={cfg.horizon}, n_estimators={cfg.n_estimators}, "
                f"num_leaves={cfg.num_leaves})")


def quantile_leaf_rows(level: float, min_rows: int, tail_rows: int) -> int:
    """The fewest rows a leaf of the `level` quantile booster may hold: `min_rows`, and at
    least `tail_rows` of them beyond the level (a leaf's output is the level's percentile of
    its rows' residuals: with 50 rows, the 0.975 percentile is the largest but one)."""
    if tail_rows <= 0:
        return int(min_rows)
    return max(int(min_rows), math.ceil(tail_rows / min(level, 1.0 - level) - 1e-9))


def _dates(days: NDArray[np.datetime64], horizon: int) -> NDArray[np.datetime64]:
    """The grid's dates followed by the `horizon` days after it."""
    after = days[-1] + np.arange(1, horizon + 1).astype("timedelta64[D]")
    out: NDArray[np.datetime64] = np.concatenate([days, after]).astype("datetime64[D]")
    return out


def _booster_text(path: Path) -> str:
    """A booster's model text from `path`, or from `path`.gz where only that exists."""
    if path.exists():
        return path.read_text()
    return gzip.decompress(path.with_name(path.name + ".gz").read_bytes()).decode()
