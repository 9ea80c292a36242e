"""Why a forecast policy overstocks: read a LightGBM policy's quantiles and levels on UCI.

Fits LightGBM (the old model, `tail_leaf_rows=0, target_cap_quantile=1`, and the default) on
all days before the last `--days`, then, from that one fit (no refits):
- coverage of the (L + R)-day cumulative levels against the realised sums, every 3rd origin;
- the summed order-up-to levels at the 0.95 fill target (mean over origins) and the
  forecast-errors policy's;
- a replay of the simulation (`optimizer.simulation.simulate`, no refits) with the policy's
  exponential tail above the top level as it is ("last": from the last quantile gap) and from
  the chord between the median and the top level ("chord"): inventory at 95% fill.

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
from optimizer import service_level as sl
from optimizer.simulation import EmpiricalPolicy, ForecastPolicy, SimulationConfig, simulate

_ORIGINAL = sl.DemandDistribution.from_quantiles.__func__  # type: ignore[attr-defined]


def _chord_tail(cls: Any, levels: Any, quantiles: Any, *, grid: Any = None) -> Any:
    """from_quantiles with the tail's b from the chord median -> top level."""
    dist = _ORIGINAL(cls, levels, quantiles, grid=grid)
    lv = np.asarray(levels, dtype=np.float64)
    qs = np.maximum.accumulate(np.maximum(np.atleast_2d(quantiles), 0.0), axis=1)
    x = -np.log(1.0 - lv)
    mid = int(np.argmin(np.abs(lv - 0.5)))
    b = (qs[:, -1] - qs[:, mid]) / (x[-1] - x[mid])
    edges = sl._GRID if grid is None else np.asarray(grid)
    mids = 0.5 * (edges[1:] + edges[:-1])
    above = mids > lv[-1]
    values = dist.values.copy()
    values[:, above] = qs[:, -1:] + b[:, None] * np.log((1.0 - lv[-1]) / (1.0 - mids[above]))
    return cls(values, np.broadcast_to(np.diff(edges), values.shape))


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
        policy = ForecastPolicy(name, model)
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
        for tail in ("last", "chord"):
            sl.DemandDistribution.from_quantiles = (  # type: ignore[method-assign]
                classmethod(_ORIGINAL) if tail == "last" else classmethod(_chord_tail))
            res = simulate(values, panel.dates, [ForecastPolicy(name, model)], cfg)
            row[f"replay_inventory_at_95_fill_{tail}_tail"] = \
                res.policies[name].inventory_at_95_fill
        sl.DemandDistribution.from_quantiles = classmethod(_ORIGINAL)  # type: ignore[method-assign]
        out[name] = row
        print(name, json.dumps(row), flush=True)
    print(json.dumps(out, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
