"""What the interval calibration adds to the incremental step + forecast: the same
measurement as `shelfcast bench inference`'s `incremental_forecast` (default LSTMConfig,
integer demand, 56-day windows, 1 torch thread), with and without a calibration, alternated
A/B `--rounds` times so machine load hits both alike.

    PYTHONPATH=. python benchmarks/interval_calibration_cost.py \
        --json benchmarks/results/interval_calibration_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from forecasting.base import QUANTILE_LEVELS
from forecasting.calibration import IntervalCalibration
from forecasting.lstm.bench import END, _rate, _windows
from forecasting.lstm.features import INPUT_DIM
from forecasting.lstm.forecaster import LSTMForecaster
from forecasting.lstm.model import LSTMConfig, LSTMNet

# Source levels of the order UCI's calibration learns (narrower 80%, lower tails moved up).
SOURCE = (0.05, 0.08, 0.16, 0.33, 0.5, 0.68, 0.85, 0.93, 0.965)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", default="1024,4096")
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = LSTMNet(INPUT_DIM, LSTMConfig(integer_demand=True))
    cal = IntervalCalibration(QUANTILE_LEVELS, SOURCE)
    models = {"raw": LSTMForecaster(net, device="cpu", end_day=lambda: END),
              "calibrated": LSTMForecaster(net, device="cpu", end_day=lambda: END,
                                           calibration=cal)}
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    load_before = list(os.getloadavg())
    for b in (int(x) for x in args.batch_sizes.split(",")):
        w = _windows(rng, b, 56)
        rates: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(args.rounds):
            for name, m in models.items():
                state = m.encode(w, END - np.timedelta64(1, "D"))

                def step_fc(m: LSTMForecaster = m, s: Any = state,
                            v: np.ndarray = w[:, -1]) -> object:
                    return m.forecast(m.update(s, v, consume=True), 14)

                rates[name].append(_rate(step_fc, b, args.seconds)["series_per_cpu_s"])
        row = {"batch": b, **{f"{k}_series_per_cpu_s": float(np.median(v))
                             for k, v in rates.items()}}
        row["ratio"] = row["calibrated_series_per_cpu_s"] / row["raw_series_per_cpu_s"]
        rows.append(row)
        print(json.dumps(row))
    doc = {"what": "incremental step + 14-day forecast, series per CPU-s (median of rounds)",
           "load_average_before": load_before, "load_average_after": list(os.getloadavg()),
           "source_levels": list(SOURCE), "rows": rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
