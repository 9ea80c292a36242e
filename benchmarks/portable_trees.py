"""Compiled LightGBM trees for the host's own CPU vs the portable target the model artifact
carries (`forecasting.compiled_trees.PORTABLE_CPU`: the architecture's generic CPU, no
host features): predict time per call at the stream's row counts, compile time, and the
largest difference from LightGBM's predict.

    PYTHONPATH=. python benchmarks/portable_trees.py --json benchmarks/results/portable_trees.json

The model: the demo's committed lstm_lgbm's LightGBM part (10 boosters x 60 trees; 28
feature rows per SKU forecast). Rows: random features with 15% NaN. The two targets are
timed interleaved, one thread, in one process.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import lleaves
import numpy as np
from bench_report import emit, machine

from forecasting.compiled_trees import PORTABLE_CPU, PORTABLE_FEATURES
from forecasting.lightgbm_peer import LightGBMForecaster
from shelfcast.demo.served import COMMITTED_MODEL

TARGETS: dict[str, dict[str, str]] = {
    "host": {},  # lleaves' default: the host's CPU name and features
    "portable": {"target_cpu": PORTABLE_CPU, "target_cpu_features": PORTABLE_FEATURES},
}


def _compile(texts: list[str], options: dict[str, str], tmp: Path) -> tuple[list[Any], float]:
    t0 = time.perf_counter()
    models = []
    for k, text in enumerate(texts):
        source = tmp / f"booster_{k}.txt"
        source.write_text(text)
        model = lleaves.Model(model_file=str(source))
        model.compile(**options)
        models.append(model)
    return models, time.perf_counter() - t0


def _per_call_us(models: list[Any], rows: np.ndarray, min_s: float) -> float:
    """Microseconds per call of all boosters on `rows` (one thread)."""
    for m in models:
        m.predict(rows, n_jobs=1)
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_s:
        for m in models:
            m.predict(rows, n_jobs=1)
        calls += 1
    return (time.perf_counter() - t0) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-s", type=float, default=1.0, help="seconds per timing")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    load0 = os.getloadavg()
    lgbm = LightGBMForecaster.load(COMMITTED_MODEL / "lightgbm")
    boosters = lgbm._models
    texts = [b.model_to_string() for b in boosters]
    rng = np.random.default_rng(0)
    n_features = int(boosters[0].num_feature())
    report: dict[str, Any] = {"boosters": len(texts), "compile_s": {}, "max_abs_diff": {},
                              "us_per_call": {}}
    with tempfile.TemporaryDirectory() as tmp:
        compiled = {}
        for name, options in TARGETS.items():
            compiled[name], seconds = _compile(texts, options, Path(tmp))
            report["compile_s"][name] = round(seconds, 2)
        probe = rng.gamma(1.0, 2.0, (4096, n_features))
        probe[rng.random(probe.shape) < 0.15] = np.nan
        for name, models in compiled.items():
            report["max_abs_diff"][name] = max(
                float(np.max(np.abs(m.predict(probe, n_jobs=1) - b.predict(probe,
                                                                            num_threads=1))))
                for m, b in zip(models, boosters, strict=True))
        for skus in (1, 16, 256):
            rows = probe[:28 * skus]
            times: dict[str, list[float]] = {name: [] for name in compiled}
            for _ in range(args.rounds):  # interleaved
                for name, models in compiled.items():
                    times[name].append(_per_call_us(models, rows, args.min_s))
            report["us_per_call"][f"{skus}_sku"] = {
                name: round(float(np.median(v)), 1) for name, v in times.items()}
            report["us_per_call"][f"{skus}_sku"]["portable_vs_host"] = round(
                float(np.median(times["portable"]) / np.median(times["host"])), 3)
    report["machine"] = machine(load0)
    emit(report, args.json)


if __name__ == "__main__":
    main()
