"""CPU serving cost of the LSTM's two backends on the same weights: torch (LSTMForecaster,
PackedNet) and numpy (NumpyLSTMForecaster, NumpyNet), one thread each (torch's
set_num_threads, threadpoolctl for numpy's BLAS), measured interleaved in one process.

    PYTHONPATH=. python benchmarks/lstm_numpy_vs_torch.py [--out benchmarks/results/X.json]

Incremental: `update` (one bucket) + `forecast` (14 steps) on carried states; full window:
`encode` of 120-day windows (the 182-day cold start bounds it) + `forecast`. The default
config (hidden 64, year-ago inputs and prior, calibration off: the same for both).
Figures are CPU seconds per 1,000 series (process CPU time, not wall: a shared machine)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from forecasting.lstm.config import LSTMConfig
from forecasting.lstm.features import INPUT_DIM
from forecasting.lstm.forecaster import LSTMForecaster
from forecasting.lstm.model import LSTMNet
from forecasting.lstm.numpy_forecaster import NumpyLSTMForecaster

END = np.datetime64("2011-06-01")


def _cpu_ms_per_1k(fn: Callable[[], object], n: int, min_s: float) -> float:
    fn()
    runs, c0 = 0, time.process_time()
    while time.process_time() - c0 < min_s or runs < 3:
        fn()
        runs += 1
    return (time.process_time() - c0) / runs / n * 1000 * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path,
                        default=Path("benchmarks/results/lstm_numpy_vs_torch.json"))
    parser.add_argument("--batches", default="64,512,2048")
    parser.add_argument("--min-s", type=float, default=1.5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    limiter = threadpool_limits(limits=1, user_api="blas")
    torch.manual_seed(0)
    cfg = LSTMConfig()
    net = LSTMNet(INPUT_DIM, cfg)
    weights = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
    backends = {
        "torch": LSTMForecaster(net, device="cpu", end_day=lambda: END),
        "numpy": NumpyLSTMForecaster(cfg, weights, end_day=lambda: END),
    }
    rng = np.random.default_rng(0)
    rows = []
    for n in (int(b) for b in args.batches.split(",")):
        windows = rng.poisson(4.0, (n, 400)).astype(float)
        y = rng.poisson(4.0, n).astype(float)
        row: dict[str, object] = {"batch": n}
        for name, fc in backends.items():
            state = fc.encode(windows, END)

            def incremental(fc: object = fc, state: object = state,
                            y: np.ndarray = y) -> None:
                fc.forecast(fc.update(state, y), 14)  # type: ignore[attr-defined]

            def full(fc: object = fc, windows: np.ndarray = windows) -> None:
                fc.forecast(fc.encode(windows[:, -120:], END), 14)  # type: ignore[attr-defined]

            row[f"{name}_incremental_cpu_ms_per_1k"] = round(
                _cpu_ms_per_1k(incremental, n, args.min_s), 2)
            row[f"{name}_full120_cpu_ms_per_1k"] = round(
                _cpu_ms_per_1k(full, n, args.min_s), 1)
        for kind in ("incremental", "full120"):
            t = float(row[f"torch_{kind}_cpu_ms_per_1k"])  # type: ignore[arg-type]
            p = float(row[f"numpy_{kind}_cpu_ms_per_1k"])  # type: ignore[arg-type]
            row[f"{kind}_numpy_over_torch"] = round(p / t, 2)
        rows.append(row)
        print(json.dumps(row))
    limiter.restore_original_limits()
    out = {"what": __doc__.splitlines()[0] if __doc__ else "", "threads": 1,
           "config": {"hidden": cfg.hidden, "layers": cfg.layers, "horizon": cfg.horizon,
                      "year_ago": cfg.year_ago},
           "torch": torch.__version__, "numpy": np.__version__,
           "machine": platform.processor() or platform.machine(),
           "load_avg_1m": round(os.getloadavg()[0], 2), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
