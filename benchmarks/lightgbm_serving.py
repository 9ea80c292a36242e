"""What the served default's LightGBM part costs per SKU forecast, by how its boosters predict:
LightGBM's predict with its default threads (OpenMP over every core: how lstm_lgbm served
before), LightGBM's predict on one thread (`cap_threads(1)`), and the boosters compiled to
native code (lleaves, `forecasting/compiled_trees.py`, one thread).

    PYTHONPATH=. python benchmarks/lightgbm_serving.py [--out benchmarks/results/X.json]

The model: the demo's committed lstm_lgbm's LightGBM part (10 boosters x 60 trees, horizon
14: 28 feature rows per SKU). One call = `LightGBMForecaster.predict` of a batch of 392-day
windows (the LSTM state's day ring, what the stream hands it), features included; the three
ways interleaved per batch size in one process. Figures: wall and process-CPU ms per SKU
forecast (CPU counts every core LightGBM's threads keep busy, spinning included); `boosters`:
the same for the ten booster predicts alone, on the batch's feature rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from forecasting.lag_features import FEATURE_NAMES
from forecasting.lightgbm_peer import LightGBMForecaster
from shelfcast.demo.served import COMMITTED_MODEL

END = np.datetime64("2011-11-20")


def _per_call(fn: Callable[[], object], min_s: float) -> tuple[float, float]:
    """(wall s, CPU s) per call, over at least `min_s` of wall time and 3 calls."""
    fn()
    runs, w0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - w0 < min_s or runs < 3:
        fn()
        runs += 1
    return (time.perf_counter() - w0) / runs, (time.process_time() - c0) / runs


def _boosters(model: LightGBMForecaster, x: np.ndarray) -> list[np.ndarray]:
    return [model._booster_predict(k, x) for k in range(len(model._models))]


def _windows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.poisson(rng.gamma(1.0, 2.0, (n, 1)), (n, 392)).astype(float)
    w[: n // 5, :300] = np.nan  # newer SKUs
    return w


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path,
                        default=Path("benchmarks/results/lightgbm_serving.json"))
    parser.add_argument("--batches", default="1,16,256,2048")
    parser.add_argument("--min-s", type=float, default=1.0)
    args = parser.parse_args()
    path = COMMITTED_MODEL / "lightgbm"
    t0 = time.perf_counter()
    compiled = LightGBMForecaster.load(path, compiled=True)
    load_s = time.perf_counter() - t0
    if compiled.trees_backend != "compiled":
        raise SystemExit("lleaves could not compile the boosters (see the log line above)")
    compiled.cap_threads(1)
    default = LightGBMForecaster.load(path, compiled=False)
    one = LightGBMForecaster.load(path, compiled=False)
    one.cap_threads(1)
    ways: dict[str, LightGBMForecaster] = {"lightgbm_default_threads": default,
                                           "lightgbm_1_thread": one, "compiled_1_thread": compiled}
    rows: list[dict[str, Any]] = []
    load = os.getloadavg()[0]
    for n in (int(b) for b in args.batches.split(",")):
        windows = _windows(n)
        feats = np.random.default_rng(n).gamma(1.0, 2.0, (28 * n, len(FEATURE_NAMES)))
        row: dict[str, Any] = {"skus": n}
        for name, model in ways.items():
            wall, cpu = _per_call(partial(model.predict, windows, 14, end_days=END), args.min_s)
            b_wall, b_cpu = _per_call(partial(_boosters, model, feats), args.min_s / 2)
            row[name] = {"wall_ms_per_sku": wall / n * 1e3, "cpu_ms_per_sku": cpu / n * 1e3,
                         "boosters_wall_ms_per_sku": b_wall / n * 1e3,
                         "boosters_cpu_ms_per_sku": b_cpu / n * 1e3}
        base = row["lightgbm_1_thread"]["cpu_ms_per_sku"]
        row["compiled_cpu_speedup_vs_1_thread"] = base / row["compiled_1_thread"]["cpu_ms_per_sku"]
        row["default_threads_cpu_vs_1_thread"] = (
            row["lightgbm_default_threads"]["cpu_ms_per_sku"] / base)
        rows.append(row)
        print(f"{n:>5} SKUs  CPU ms/SKU: default threads "
              f"{row['lightgbm_default_threads']['cpu_ms_per_sku']:.3f}  1 thread {base:.3f}  "
              f"compiled {row['compiled_1_thread']['cpu_ms_per_sku']:.3f}  "
              f"(wall {row['lightgbm_default_threads']['wall_ms_per_sku']:.3f} / "
              f"{row['lightgbm_1_thread']['wall_ms_per_sku']:.3f} / "
              f"{row['compiled_1_thread']['wall_ms_per_sku']:.3f})", flush=True)
    out = {"model": str(path), "boosters": len(compiled._models), "rows_per_sku": 28,
           "compiled_load_s": load_s, "results": rows,
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                       "python": platform.python_version(),
                       "loadavg_1m_at_start": load, "loadavg_1m_at_end": os.getloadavg()[0]}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
