"""Rolling-origin backtest: every model forecasts the same folds; MASE, WAPE, pinball, coverage."""

from __future__ import annotations

import functools
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np

from forecasting._numeric import FloatArray
from forecasting.base import Forecaster, QuantileForecast
from forecasting.data import Panel
from forecasting.metrics import coverage, mase, pinball, wape
from forecasting.registry import make_forecaster

__all__ = [
    "BacktestResult",
    "FoldForecast",
    "plot_backtest",
    "rolling_origin",
    "score",
]

INTERVALS = {"coverage_80": (0.1, 0.9), "coverage_95": (0.025, 0.975)}


@dataclass
class FoldForecast:
    """One model's forecast at one origin, with what happened."""

    cutoff: int  # first forecast day's column in the panel
    forecast: QuantileForecast
    actual: FloatArray  # (n, horizon)
    fit_seconds: float
    predict_seconds: float


@dataclass
class BacktestResult:
    """Scores per model, per fold, and the raw fold forecasts (for plots)."""

    models: dict[str, dict[str, float]]
    folds: list[dict[str, Any]]
    meta: dict[str, Any]
    forecasts: dict[str, list[FoldForecast]] = field(default_factory=dict, repr=False)
    global_models: tuple[str, ...] = ()  # the models trained on the panel (Forecaster.fits)

    def to_json(self) -> dict[str, Any]:
        """The JSON document: {"models": {name: {mase, wape, ...}}, "folds": [...], ...}."""
        return {"models": self.models, "folds": self.folds, **self.meta}


def _level_index(levels: FloatArray, level: float) -> int:
    hits = np.flatnonzero(np.isclose(levels, level))
    if hits.size == 0:
        raise ValueError(f"forecast has no {level} quantile (levels {levels.tolist()})")
    return int(hits[0])


def score(fc: QuantileForecast, actual: FloatArray, history: FloatArray,
          season: int = 7) -> dict[str, float]:
    """Accuracy of one forecast: MASE and WAPE of the mean (and of the median), mean pinball
    loss over the levels, coverage of the central 80/95% intervals, and the pinball loss of
    the horizon total (lead-time demand). Pooled over series; MASE is the mean of per-series
    MASE (series whose seasonal-naive scale is 0 are left out)."""
    levels = fc.levels
    median = fc.daily[..., _level_index(levels, 0.5)]
    out = {
        "mase": _nanmean(mase(actual, fc.mean, history, season=season)),
        "wape": float(wape(actual, fc.mean)),
        "pinball": float(pinball(actual, fc.daily, levels)),
        "mase_median": _nanmean(mase(actual, median, history, season=season)),
        "wape_median": float(wape(actual, median)),
    }
    for key, (lo, hi) in INTERVALS.items():
        lower = fc.daily[..., _level_index(levels, lo)]
        upper = fc.daily[..., _level_index(levels, hi)]
        out[key] = float(coverage(actual, lower, upper))
        out[f"{key}_ties_half"] = float(coverage(actual, lower, upper, ties=0.5))
    total = np.where(np.isfinite(actual).all(axis=1), actual.sum(axis=1), np.nan)
    out["pinball_total"] = float(pinball(total, fc.cumulative[:, -1], levels))
    return out


def _nanmean(x: float | FloatArray) -> float:
    arr = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(arr)
    return float(arr[ok].mean()) if ok.any() else float("nan")


ModelFactory = Callable[[str], Forecaster]


def rolling_origin(
    panel: Panel,
    models: Sequence[str],
    *,
    horizon: int = 14,
    folds: int = 4,
    step: int | None = None,
    season: int = 7,
    refit: bool = True,
    factory: ModelFactory | None = None,
    on_fold: Callable[[str, int, dict[str, float]], None] | None = None,
    jobs: int = 1,
) -> BacktestResult:
    """Evaluate `models` (registry names) on `folds` origins spaced `step` (default: horizon)
    days apart, the last one ending on the panel's last day.

    At each origin every model sees the history before it (all of it, as windows), forecasts
    `horizon` days and is scored against what happened; the panel's known-in-advance
    covariates (`Panel.covariates`), when it has them, are given whole (a promotion planned
    for a forecast day is known at the origin). Global models (`Forecaster.fits`)
    are trained on the history before each origin (`refit`) or only before the first one.
    Scores per model pool all folds: metrics are averaged over folds, seconds are summed.
    `jobs` > 1 runs up to that many models at once, each in a forked process (the scores
    are the same; seconds then include the other models' competition for the CPU).
    """
    step = step or horizon
    make = factory or (lambda name: make_forecaster(name))
    length = panel.n_days
    cutoffs = [length - horizon - k * step for k in range(folds - 1, -1, -1)]
    if cutoffs[0] < 2 * season + 1:
        raise ValueError(f"not enough history for {folds} folds of {horizon} days")
    def run_one(name: str) -> tuple[list[FoldForecast], list[dict[str, float]],
                                    list[dict[str, Any]], bool]:
        model = make(name)
        forecasts, rows, fold_rows = [], [], []
        for k, cutoff in enumerate(cutoffs):
            history = panel.head(cutoff)
            fit_seconds = 0.0
            if model.fits and (refit or k == 0):
                t0 = time.perf_counter()
                model.fit(history)
                fit_seconds = time.perf_counter() - t0
            t0 = time.perf_counter()
            fc = model.predict(history.values, horizon, end_days=history.dates[-1],
                               covariates=panel.covariates)
            predict_seconds = time.perf_counter() - t0
            actual = panel.values[:, cutoff : cutoff + horizon]
            s = score(fc, actual, history.values, season)
            s.update(fit_seconds=fit_seconds, predict_seconds=predict_seconds)
            forecasts.append(FoldForecast(cutoff, fc, actual, fit_seconds, predict_seconds))
            rows.append(s)
            fold_rows.append({"model": name, "fold": k, "origin": str(panel.dates[cutoff]),
                              **s})
            if on_fold is not None:
                on_fold(name, k, s)
        return forecasts, rows, fold_rows, model.fits

    if jobs > 1 and len(models) > 1:
        outcomes = _run_forked(list(models), run_one, jobs)
    else:
        outcomes = {name: run_one(name) for name in models}
    per_model = {name: outcomes[name][0] for name in models}
    scores = {name: outcomes[name][1] for name in models}
    fold_rows = [row for name in models for row in outcomes[name][2]]
    summary: dict[str, dict[str, float]] = {}
    for name, rows in scores.items():
        keys = rows[0].keys()
        summary[name] = {
            key: float(np.sum([r[key] for r in rows])) if key.endswith("seconds")
            else float(np.mean([r[key] for r in rows])) for key in keys
        }
    meta = {"horizon": horizon, "n_folds": folds, "step": step, "season": season,
            "refit": refit, "origins": [str(panel.dates[c]) for c in cutoffs],
            "n_series": panel.n_series, "n_days": panel.n_days,
            "first_day": str(panel.dates[0]), "last_day": str(panel.dates[-1]),
            "data_fingerprint": panel.fingerprint(),
            "covariates": panel.covariates is not None}
    global_models = tuple(name for name in models if outcomes[name][3])
    return BacktestResult(summary, fold_rows, meta, per_model, global_models)


def _child(fn: Callable[[], Any], conn: Connection) -> None:
    try:
        conn.send(("ok", fn()))
    except BaseException as exc:  # the parent re-raises it with the model's name
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _run_forked(names: list[str], run_one: Callable[[str], Any], jobs: int) -> dict[str, Any]:
    """run_one(name) for every name, at most `jobs` forked processes at a time (fork: the
    closure and the panel are inherited, only results travel back through a pipe)."""
    ctx = multiprocessing.get_context("fork")
    pending, running, results = list(names), [], {}
    try:
        while pending or running:
            while pending and len(running) < jobs:
                name = pending.pop(0)
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_child, args=(functools.partial(run_one, name), send))
                proc.start()
                send.close()
                running.append((name, proc, recv))
            ready = wait([conn for _, _, conn in running])
            for item in list(running):
                name, proc, conn = item
                if conn not in ready:
                    continue
                try:
                    status, payload = conn.recv()
                except EOFError:
                    status, payload = "error", "worker process died"
                proc.join()
                running.remove(item)
                if status != "ok":
                    raise RuntimeError(f"backtest of {name!r} failed: {payload}")
                results[name] = payload
    finally:
        for _, proc, _ in running:
            proc.kill()
    return results


def plot_backtest(result: BacktestResult, panel: Panel, path: str | Path) -> None:
    """PNG: scores relative to seasonal naive, and the last fold of the busiest series with
    each model's median and the 80% band of the first probabilistic global model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result.models)
    base = result.models.get("seasonal_naive")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5))
    metrics = ["mase", "wape", "pinball"]
    width = 0.8 / max(len(names), 1)
    for j, name in enumerate(names):
        vals = [result.models[name][m] / (base[m] if base else 1.0) for m in metrics]
        ax1.bar(np.arange(len(metrics)) + j * width, vals, width, label=name)
    ax1.set_xticks(np.arange(len(metrics)) + 0.4 - width / 2, metrics)
    ax1.axhline(1.0, color="grey", lw=0.8)
    ax1.set_ylabel("relative to seasonal naive" if base else "score")
    ax1.set_title("rolling-origin backtest (lower is better)")
    ax1.legend(fontsize=8)
    first = result.forecasts[names[0]][-1]
    row = int(np.nanargmax(np.nansum(panel.values, axis=1)))
    cutoff, horizon = first.cutoff, first.actual.shape[1]
    days = np.arange(cutoff - 56, cutoff + horizon)
    ax2.plot(days, panel.values[row, cutoff - 56 : cutoff + horizon], color="black", lw=1,
             label="actual")
    banded = result.global_models[0] if result.global_models else None
    for name in names:
        fc = result.forecasts[name][-1].forecast
        mid = _level_index(fc.levels, 0.5)
        steps = np.arange(cutoff, cutoff + horizon)
        ax2.plot(steps, fc.daily[row, :, mid], lw=1.2, label=f"{name} median")
        if name == banded:
            lo, hi = _level_index(fc.levels, 0.1), _level_index(fc.levels, 0.9)
            ax2.fill_between(steps, fc.daily[row, :, lo], fc.daily[row, :, hi], alpha=0.25,
                             label=f"{name} 80%")
    ax2.set_title(f"series {panel.ids[row]}, last fold (day index)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
