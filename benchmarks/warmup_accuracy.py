"""Accuracy cost of the bounded warm-up: exact whole-history LSTM states vs warm-up W days.

The backtest's protocol (`shelfcast backtest --refit once`): the LSTM is trained once on the
history before the first of 4 origins 14 days apart, then forecasts every origin. Here each
origin is forecast from
  - `exact_full`: the whole history (what the backtest scores),
  - `exact_400`: a full recompute of the last `--window` days (400: what a caller that keeps
    400-day windows recomputes today),
  - `warmup_W`: the same windows encoded with `encode(..., warmup_days=W)`: the LSTM from a
    zero state over the last W days only, the running scale and the year-ago inputs from
    the whole window,
  - `warmup_W_scale_restarted`: the first design, for comparison: the running scale also
    restarted W days before the end (the exact encode of the window with the days before
    its last W hidden as NaN before a first observation), the year-ago inputs as above,
and scored with the backtest's `score` (MASE against the whole history's seasonal-naive
scale, so every variant has the same denominator). A scan then checks the tail over many
origins (weekly over the last `--window` days, in-sample ones included: it measures how
far the warm-up moves a series' forecast from the exact recompute, not accuracy). Prints
tables and writes JSON:

    PYTHONPATH=$PWD nice -n 10 python benchmarks/warmup_accuracy.py \
        --json benchmarks/results/warmup_store_item.json

The trained model is kept in `--model-dir` (default /tmp/shelfcast_warmup_model) and reused
when its data fingerprint matches.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from forecasting.backtest import score
from forecasting.base import QuantileForecast
from forecasting.data import Panel, load_panel
from forecasting.lstm import LSTMConfig, LSTMForecaster, make_lstm
from forecasting.lstm.artifact import load_artifact, read_metadata, save_artifact
from forecasting.lstm.config import config_overrides
from forecasting.lstm.features import DayRing
from forecasting.lstm.forecaster import SeriesState
from runtime.paths import recorded_path

DATA = Path("../shared/data/store_item_demand/train.csv.gz")
METRICS = ("mase", "wape", "pinball", "coverage_80", "coverage_95", "pinball_total")


def _model(history: Panel, model_dir: Path, overrides: dict[str, Any] | None = None,
           ) -> tuple[LSTMForecaster, dict[str, Any]]:
    """The backtest's LSTM fit on `history` (loaded from `model_dir` when already there,
    fitted on the same data with the same `overrides` of the default config)."""
    fingerprint = history.fingerprint()
    if model_dir.exists():
        try:
            meta = read_metadata(model_dir)
            saved = meta.get("config", {})
            same = all(saved.get(k) == v for k, v in (overrides or {}).items())
            if meta.get("data_fingerprint") == fingerprint and same:
                return load_artifact(model_dir, device="cpu"), {
                    "reused": str(model_dir), "model_version": meta.get("model_version"),
                    "training_metrics": meta.get("metrics")}
        except (OSError, ValueError, KeyError):
            pass
    model = make_lstm(device="cpu", **_config(overrides))
    t0, c0 = time.perf_counter(), time.process_time()
    model.fit(history)
    info = {"fit_wall_s": time.perf_counter() - t0, "fit_cpu_s": time.process_time() - c0,
            "training_metrics": model.train_result.metrics if model.train_result else None}
    save_artifact(model, model_dir, data_fingerprint=fingerprint,
                  metrics=model.train_result.metrics if model.train_result else None)
    return model, info


def _config(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg: dict[str, Any] = dict(LSTMConfig(horizon=14).to_json())
    cfg.update(overrides or {})
    cfg["levels"] = tuple(cfg["levels"])  # as the backtest's factory passes it
    return cfg


def _forecast(model: LSTMForecaster, variant: str, tail: np.ndarray, end: np.datetime64,
              horizon: int) -> QuantileForecast:
    """The forecast of one variant ("exact_N", "warmup_W", "warmup_W_scale_restarted")."""
    if variant.startswith("exact_"):
        return model.forecast(model.encode(tail, end), horizon)
    if variant.endswith("_scale_restarted"):
        w = int(variant.split("_")[1])
        hidden = tail.copy()
        hidden[:, :-w] = np.nan
        st = model.encode(hidden, end)
        ring = DayRing.from_windows(tail) if st.ring is not None else None
        return model.forecast(SeriesState(st.h, st.c, st.scale, st.last_day, ring), horizon)
    w = int(variant.removeprefix("warmup_"))
    return model.forecast(model.encode(tail, end, warmup_days=w), horizon)


def _moved(fc: QuantileForecast, exact: QuantileForecast) -> float:
    """The largest relative change of one series' horizon total (mean; floor 1 unit)."""
    total, exact_total = fc.mean.sum(axis=1), exact.mean.sum(axis=1)
    return float((np.abs(total - exact_total) / np.maximum(exact_total, 1.0)).max(initial=0.0))


def scan(model: LSTMForecaster, panel: Panel, window: int, warmups: list[int], horizon: int,
         step_days: int) -> dict[str, Any]:
    """The tail risk over many origins (every `step_days` back over the last `window` days,
    in-sample ones included: this checks how far the state moves, not accuracy): per
    variant, the worst series' relative change of its horizon total vs the exact recompute
    of the same window, per origin."""
    length = panel.n_days
    cutoffs = list(range(length - horizon, max(2 * horizon, length - window), -step_days))
    variants = [*[f"warmup_{w}" for w in warmups],
                *[f"warmup_{w}_scale_restarted" for w in warmups]]
    moved: dict[str, list[float]] = {v: [] for v in variants}
    for cutoff in cutoffs:
        history = panel.head(cutoff)
        end = history.dates[-1]
        tail = history.values[:, -window:]
        exact = model.forecast(model.encode(tail, end), horizon)
        for v in variants:
            moved[v].append(_moved(_forecast(model, v, tail, end, horizon), exact))
    return {"origins": [str(panel.dates[c]) for c in cutoffs], "worst_per_origin": moved,
            "summary": {v: {"max": max(m), "median": float(np.median(m)),
                            "origins_over_10pct": int(np.sum(np.array(m) > 0.1)),
                            "origins_over_1pct": int(np.sum(np.array(m) > 0.01))}
                        for v, m in moved.items()}}


def run(data: Path, max_series: int, window: int, warmups: list[int], horizon: int,
        folds: int, model_dir: Path, scan_step_days: int = 7,
        overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score every variant at every origin; returns the JSON document."""
    torch.set_num_threads(1)
    panel = load_panel(data, max_series=max_series)
    length = panel.n_days
    cutoffs = [length - horizon - k * horizon for k in range(folds - 1, -1, -1)]
    model, fit_info = _model(panel.head(cutoffs[0]), model_dir, overrides)
    variants = ["exact_full", f"exact_{window}", *[f"warmup_{w}" for w in warmups],
                *[f"warmup_{w}_scale_restarted" for w in warmups]]
    per_fold: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    gaps: dict[str, list[float]] = {v: [] for v in variants}
    worst: dict[str, float] = {v: 0.0 for v in variants}
    for cutoff in cutoffs:
        history = panel.head(cutoff)
        end = history.dates[-1]
        actual = panel.values[:, cutoff : cutoff + horizon]
        full = model.forecast(model.encode(history.values, end), horizon)
        tail = history.values[:, -window:]
        for v in variants:
            fc = full if v == "exact_full" else _forecast(model, v, tail, end, horizon)
            s = score(fc, actual, history.values)
            s["origin"] = str(panel.dates[cutoff])  # type: ignore[assignment]
            per_fold[v].append(s)
            # how far the mean forecast moved from the exact whole-history one (relative)
            gaps[v].append(float(np.mean(np.abs(fc.mean - full.mean))
                                 / max(float(np.mean(np.abs(full.mean))), 1e-9)))
            worst[v] = max(worst[v], _moved(fc, full))  # the tail: the worst series
    summary: dict[str, dict[str, float]] = {}
    for v in variants:
        row = {m: float(np.mean([f[m] for f in per_fold[v]])) for m in METRICS}
        row["mean_abs_change_vs_exact"] = float(np.mean(gaps[v]))
        row["max_series_total_change_vs_exact"] = worst[v]
        summary[v] = row
    base = summary["exact_full"]
    for row in summary.values():
        row["mase_gap_pct"] = 100.0 * (row["mase"] / base["mase"] - 1.0)
        row["pinball_gap_pct"] = 100.0 * (row["pinball"] / base["pinball"] - 1.0)
    return {"data": recorded_path(data), "max_series": max_series, "n_series": panel.n_series,
            "n_days": length, "window": window, "warmup_days": warmups, "horizon": horizon,
            "origins": [str(panel.dates[c]) for c in cutoffs],
            "trained_on_days": int(cutoffs[0]), "fit": fit_info,
            "lstm_config": model.config.to_json(), "summary": summary,
            "folds": {v: per_fold[v] for v in variants},
            "scan": scan(model, panel, window, warmups, horizon, scan_step_days),
            "load_average": list(os.getloadavg())}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--max-series", type=int, default=200)
    p.add_argument("--window", type=int, default=400)
    p.add_argument("--warmups", default="28,56,91,182")
    p.add_argument("--horizon", type=int, default=14)
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--model-dir", type=Path, default=Path("/tmp/shelfcast_warmup_model"))
    p.add_argument("--scan-step-days", type=int, default=7,
                   help="days between the origins of the tail-risk scan")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="override a default LSTMConfig field, e.g. state_reset_prob=0.25")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    try:
        overrides = config_overrides(args.set)
    except ValueError as exc:
        p.error(str(exc))
    warmups = [int(x) for x in args.warmups.split(",")]
    doc = run(args.data, args.max_series, args.window, warmups, args.horizon, args.folds,
              args.model_dir, args.scan_step_days, overrides)
    doc["command"] = "python benchmarks/warmup_accuracy.py " + " ".join(sys.argv[1:])
    cols = ("mase", "pinball", "coverage_80", "coverage_95", "pinball_total", "mase_gap_pct",
            "pinball_gap_pct", "mean_abs_change_vs_exact", "max_series_total_change_vs_exact")
    print(f"{'variant':>26} " + " ".join(f"{m[:11]:>11}" for m in cols))
    for v, row in doc["summary"].items():
        print(f"{v:>26} " + " ".join(f"{row[m]:11.4f}" for m in cols))
    print(f"tail-risk scan over {len(doc['scan']['origins'])} origins: worst series' "
          "relative change of its total (max, median, origins > 10%, > 1%)")
    for v, row in doc["scan"]["summary"].items():
        print(f"{v:>26} {row['max']:11.4f} {row['median']:11.5f} "
              f"{row['origins_over_10pct']:5d} {row['origins_over_1pct']:5d}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
