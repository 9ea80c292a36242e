"""The accuracy monitor on a replay of real demand: false alarms without a shift, delay with one.

Each day of a panel is forecast by the served baseline (moving average, 56-day windows) from
the days before it, scored (forecasting/accuracy.py `score`), and the fleet's totals go to a
`DriftMonitor` (default config: 7-bucket window, band learned over 28 windows), as the
optimizer does with the actuals. Run once as is (every episode there is a false alarm), then
with every SKU's demand from `--shift-days` before the end drawn Poisson around `factor` x
the real demand (the episodes and the delay of the first one after the shift):

    PYTHONPATH=$PWD python benchmarks/drift_replay.py \
        ../shared/data/uci_online_retail/daily_panel.csv.gz \
        --json benchmarks/results/drift_replay_uci_online_retail.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from forecasting import make_forecaster
from forecasting.accuracy import BucketTotals, DriftMonitor, score
from forecasting.data import load_panel
from runtime.paths import recorded_path

WINDOW_DAYS = 56


def replay(demand: np.ndarray, warm_days: int) -> list[dict[str, Any]]:
    """The episodes (kind, day, reasons) of a replay of `demand` (n, days)."""
    forecaster = make_forecaster("moving_average")
    monitor = DriftMonitor()
    n, days = demand.shape
    episodes = []
    for t in range(warm_days, days):
        past = demand[:, max(0, t - WINDOW_DAYS):t]
        past = np.hstack([np.full((n, WINDOW_DAYS - past.shape[1]), np.nan), past])
        fc = forecaster.predict(past, 1)
        y = demand[:, t]
        seen = np.isfinite(y)
        s = score(y[seen], fc.daily[seen, 0, :], fc.levels)
        change = monitor.observe(t, BucketTotals(
            int(seen.sum()), float(s.pinball.sum()), float(y[seen].sum()),
            float(s.covered.sum()), float(s.error(y[seen]).sum())))
        if change is not None:
            episodes.append({"kind": change.kind, "day": t, "reasons": list(change.reasons),
                             "coverage": round(change.scores.coverage, 4),
                             "pinball_relative": round(change.scores.pinball_relative, 4)})
    return episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--factors", default="2,1.5,0.67,0.5")
    parser.add_argument("--shift-days", type=int, default=90)
    parser.add_argument("--warm-days", type=int, default=56)
    parser.add_argument("--max-series", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    panel = load_panel(args.data, max_series=args.max_series)
    demand = np.maximum(panel.values, 0.0)
    n, days = demand.shape
    shift_at = days - args.shift_days
    result: dict[str, Any] = {"data": recorded_path(args.data), "series": n, "days": days,
                              "shift_day": shift_at, "stable": replay(demand, args.warm_days),
                              "shifted": {}}
    print(f"{n} series x {days} days; stable replay: {len(result['stable'])} episode(s) "
          f"{[(e['kind'], e['day']) for e in result['stable']]}")
    rng = np.random.default_rng(7)
    for factor in (float(f) for f in args.factors.split(",")):
        shifted = demand.copy()
        tail = shifted[:, shift_at:]
        shifted[:, shift_at:] = np.where(np.isfinite(tail),
                                         rng.poisson(np.nan_to_num(tail) * factor), np.nan)
        episodes = replay(shifted, args.warm_days)
        after = [e["day"] - shift_at for e in episodes
                 if e["kind"] == "opened" and e["day"] >= shift_at]
        result["shifted"][str(factor)] = {"episodes": episodes,
                                          "delay_buckets": after[0] if after else None}
        print(f"x{factor} from day {shift_at}: first episode after the shift "
              f"{'none' if not after else f'{after[0]} bucket(s) later'}; all "
              f"{[(e['kind'], e['day']) for e in episodes]}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
