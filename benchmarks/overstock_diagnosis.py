"""Why a forecast policy overstocks: read a LightGBM policy's quantiles and levels on UCI.

Fits LightGBM (the old model, `tail_leaf_rows=0, target_cap_quantile=1`, and the default) on
all days before the last `--days`, then, from that one fit (no refits):
- coverage of the (L + R)-day cumulative levels against the realised sums, every 3rd origin;
- the summed order-up-to levels at the 0.95 fill target (mean over origins) and the
  forecast-errors policy's;
- a replay of the simulation (`optimizer.simulation.simulate`, no refits) with the policy's
  exponential tail above the top level from the last quantile gap ("last", tail=last_gap, the
  default until issue 16) and from the chord between the median and the top level ("chord",
  tail=median_chord, the default since): inventory at 95% fill. The summed levels use the
  last-gap tail, as when this was measured.

    python benchmarks/overstock_diagnosis.py \
        --data ../shared/data/uci_online_retail/daily_panel.csv.gz
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from forecasting.data import load_panel
from forecasting.lightgbm_peer import LightGBMForecaster
from optimizer.service_level import TailRule
from optimizer.simulation import EmpiricalPolicy, ForecastPolicy, SimulationConfig, simulate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--days", type=int, default=56)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    panel = load_panel(args.data)
    cut = panel.n_days - args.days
    values = panel.values
    cfg = SimulationConfig(lead_time_days=7, review_days=1, days=args.days, retrain_days=0,
                           sweep=(0.5, 0.8, 0.9, 0.95, 0.99, 0.999))
    cover = cfg.lead_time_days + cfg.review_days
    targets = np.array([0.95])

    def history(t: int) -> np.ndarray:
        h = values[:, max(0, t - 364):t]
        return np.concatenate([np.full((values.shape[0], 364 - h.shape[1]), np.nan), h], axis=1)

    errors = EmpiricalPolicy("forecast-errors", level_window=28)
    origins = range(cut, panel.n_days - cover, 3)
    out: dict[str, Any] = {"data": str(args.data), "fit_days": cut,
                           "origins": len(origins)}
    fe = [errors.levels(history(t), panel.dates[t - 1], targets, cfg)[1].sum()
          for t in origins]
    out["forecast_errors_mean_summed_level"] = round(float(np.mean(fe)))
    for name, options in (("old", {"tail_leaf_rows": 0, "target_cap_quantile": 1.0}),
                          ("default", {})):
        model = LightGBMForecaster(14, **options)
        model.cap_threads(1)
        model.fit(panel.head(cut))
        policy = ForecastPolicy(name, model, tail="last_gap")
        cov, level_sums = [], []
        for t in origins:
            h, end = history(t), panel.dates[t - 1]
            fc = model.predict(h, cover, end_days=end)
            real = np.nansum(values[:, t:t + cover], axis=1)
            cov.append((real[:, None] <= fc.cumulative[:, cover - 1, :]).mean(axis=0))
            level_sums.append(policy.levels(h, end, targets, cfg)[1].sum())
        row: dict[str, Any] = {
            "levels": model.levels.tolist(),
            "coverage": np.round(np.mean(cov, axis=0), 3).tolist(),
            "mean_summed_level_095": round(float(np.mean(level_sums))),
        }
        rules: tuple[tuple[str, TailRule], ...] = (("last", "last_gap"), ("chord", "median_chord"))
        for tail, rule in rules:
            res = simulate(values, panel.dates, [ForecastPolicy(name, model, tail=rule)], cfg)
            row[f"replay_inventory_at_95_fill_{tail}_tail"] = \
                res.policies[name].inventory_at_95_fill
        out[name] = row
        print(name, json.dumps(row), flush=True)
    print(json.dumps(out, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
