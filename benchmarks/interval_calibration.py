"""Interval calibration ablation: one LSTM training as `shelfcast backtest --refit once` does
(on the history before the first origin), then the same backtest origins and scores
(`forecasting.backtest.score`) for the raw quantiles, the daily calibration (the default) and
daily + cumulative calibration, plus the calibration's own validation report.

    PYTHONPATH=. python benchmarks/interval_calibration.py \
        --data ../shared/data/uci_online_retail/daily_panel.csv.gz \
        --json benchmarks/results/interval_calibration_uci_online_retail.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from forecasting.backtest import score
from forecasting.data import load_panel
from forecasting.lstm import load_artifact, make_lstm, read_metadata, save_artifact
from forecasting.lstm.calibration import fit_calibration
from forecasting.metrics import coverage
from runtime.paths import recorded_path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--max-series", type=int, default=None)
    p.add_argument("--horizon", type=int, default=14)
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--save", type=Path, default=None, help="write the trained model here")
    p.add_argument("--model", type=Path, default=None,
                   help="score this trained model (same data and origins) instead of training")
    p.add_argument("--recalibrate", action="store_true",
                   help="with --model: fit the calibration again with this code")
    args = p.parse_args()
    torch.set_num_threads(1)
    panel = load_panel(args.data, max_series=args.max_series)
    big_h, length = args.horizon, panel.n_days
    cutoffs = [length - big_h - k * big_h for k in range(args.folds - 1, -1, -1)]
    t0 = time.perf_counter()
    if args.model is not None:
        model = load_artifact(args.model, device="cpu")
        metrics = read_metadata(args.model)["metrics"]
        if args.recalibrate:
            model.calibration = fit_calibration(model, panel.head(cutoffs[0]), cumulative=True)
    else:
        model = make_lstm(device="cpu", horizon=big_h, calibrate=True,
                          calibrate_cumulative=True)
        model.fit(panel.head(cutoffs[0]))
        metrics = model.train_result.metrics
        if args.save is not None:
            save_artifact(model, args.save, data_fingerprint=panel.head(cutoffs[0]).fingerprint(),
                          metrics=metrics)
    fit_seconds = time.perf_counter() - t0
    cal = model.calibration
    assert cal is not None
    variants = {"raw": None, "daily": dataclasses.replace(cal, cumulative=None),
                "daily+cumulative": cal}
    scores: dict[str, dict[str, float]] = {}
    for name, variant in variants.items():
        model.calibration = variant
        rows = []
        for cutoff in cutoffs:
            history = panel.head(cutoff)
            fc = model.predict(history.values, big_h, end_days=history.dates[-1])
            actual = panel.values[:, cutoff : cutoff + big_h]
            row = score(fc, actual, history.values)
            total = np.where(np.isfinite(actual).all(axis=1), actual.sum(axis=1), np.nan)
            for key, (lo, hi) in (("80", (2, 6)), ("95", (0, 8))):  # the 14-day total's
                row[f"total_coverage_{key}"] = float(coverage(
                    total, fc.cumulative[:, -1, lo], fc.cumulative[:, -1, hi]))
            rows.append(row)
        scores[name] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    doc = {"data": recorded_path(args.data), "n_series": panel.n_series,
           "origins": [str(panel.dates[c]) for c in cutoffs], "fit_seconds": fit_seconds,
           "calibration": cal.to_json(), "train_metrics": metrics,
           "scores": scores}
    keys = ["mase", "pinball", "coverage_80", "coverage_80_ties_half", "coverage_95",
            "coverage_95_ties_half", "pinball_total", "total_coverage_80", "total_coverage_95"]
    print("variant " + " ".join(keys), file=sys.stderr)
    for name, s in scores.items():
        print(f"{name} " + " ".join(f"{s[k]:.3f}" for k in keys), file=sys.stderr)
    print(json.dumps(cal.to_json(), indent=1), file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
