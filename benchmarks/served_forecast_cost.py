"""CPU per SKU forecast of the served model (`lstm_lgbm`) through the inferencer's keyed path.

What the stream does once a day per SKU, at the bench's batch sizes: `Inferencer._forward` on
one keyed request of `n` SKUs (durable states in and out), each SKU one bucket on from its
carried state: the LSTM step, its forecast, LightGBM's lag features from the day ring and
its compiled trees, the mix and its recalibration, the durable export. The model is the
pipeline bench's (`shelfcast.bench_pipeline.served_model`: the cached quick lstm_lgbm, or
`--model-path`). Each batch size is timed over `--steps` consecutive days (least of
`--repeat` passes, each from a fresh cold start); the time inside the main parts is counted
apart (CPU time, on a pass of their own) by wrapping them (their names are looked up, so the
script runs on older trees too).
The digest covers every forecast number and durable state byte: two trees that print the
same digest served the same numbers.

    PYTHONPATH=$PWD python benchmarks/served_forecast_cost.py \
        --json benchmarks/results/served_forecast_cost.json
    # another tree (e.g. a worktree of main), same machine, for the ratio and the digest:
    (cd ../main-wt && PYTHONPATH=$PWD python $OLDPWD/benchmarks/served_forecast_cost.py)
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# (module, attribute path) of the parts timed apart, where the tree has them
PARTS = (
    ("forecasting.lstm.numpy_forecaster", "NumpyLSTMForecaster.update", "lstm_update"),
    ("forecasting.lstm.numpy_forecaster", "NumpyLSTMForecaster.forecast", "lstm_forecast"),
    ("forecasting.combination", "LSTMLightGBMForecaster._lightgbm_forecast", "lightgbm"),
    ("forecasting.lightgbm_peer", "LightGBMForecaster._booster_predict", "lightgbm_trees"),
    ("forecasting.lightgbm_peer", "LagTable.of", "lightgbm_lag_table"),
    ("forecasting.lightgbm_peer", "lag_features", "lightgbm_features"),
    ("forecasting.lightgbm_peer", "serving_features", "lightgbm_features"),
    ("forecasting.combination", "combine", "combine"),
    ("forecasting.lstm.slots", "StateSlots.export", "export"),
)


TIMING = [False]  # the parts are timed on a pass of their own (a clock read costs ~2 us)


def _wrap(timers: dict[str, float]) -> None:
    import importlib

    for module_name, attr, label in PARTS:
        module = importlib.import_module(module_name)
        owner: Any = module
        *path, name = attr.split(".")
        for part in path:
            owner = getattr(owner, part, None)
        if owner is None or not hasattr(owner, name):
            continue
        raw = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name)
        fn = raw.__func__ if isinstance(raw, (classmethod, staticmethod)) else raw

        def timed(*a: Any, _fn: Callable[..., Any] = fn, _label: str = label,
                  **kw: Any) -> Any:
            if not TIMING[0]:
                return _fn(*a, **kw)
            t = time.process_time()
            try:
                return _fn(*a, **kw)
            finally:
                timers[_label] += time.process_time() - t

        setattr(owner, name, classmethod(timed) if isinstance(raw, classmethod)
                else staticmethod(timed) if isinstance(raw, staticmethod) else timed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1,10,100,1000,2500")
    ap.add_argument("--steps", type=int, default=6, help="days stepped per pass")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--days-apart", type=int, default=2,
                    help="distinct end days in a batch (the stream sees 1-3)")
    ap.add_argument("--model-path", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from rich.console import Console

    from forecasting.inferencer import Inferencer, InferencerStats, _Request
    from runtime.settings import Settings
    from shelfcast.bench_pipeline import PipelineBenchOptions, served_model
    from streams.forecaster_setup import model_source

    settings = served_model(Settings(kafka_bootstrap="unused:9092"),
                            PipelineBenchOptions(events=50_000, model_path=args.model_path),
                            Console(stderr=True))
    forecaster, _ = model_source(settings)
    timers: dict[str, float] = defaultdict(float)
    _wrap(timers)
    digest = hashlib.sha256()
    rows: list[dict[str, Any]] = []
    day0 = np.datetime64("2024-06-01", "D")

    async def run() -> None:
        inf = Inferencer(forecaster, on_loop=True)
        loop = asyncio.get_running_loop()
        for n in (int(s) for s in args.sizes.split(",")):
            rng = np.random.default_rng(n)
            history = rng.poisson(rng.gamma(1.0, 2.0, (n, 1)), (n, 56 + args.steps))
            history = history.astype(np.float64)
            history[rng.random(history.shape) < 0.05] = np.nan
            keys = [f"S{i}@wh" for i in range(n)]
            lag = np.arange(n) % max(args.days_apart, 1)  # end days of the rows differ
            best: dict[str, float] | None = None
            for rep in range(args.repeat + 1):  # the last pass times the parts
                TIMING[0] = rep == args.repeat
                inf._slots, inf.stats = None, InferencerStats()
                states: list[bytes | None] = [None] * n
                cpu = wall = 0.0
                timers.clear()
                for step in range(args.steps + 1):  # step 0: the cold start (not timed)
                    ends = day0 + step - lag
                    window = history[:, step : step + 56]
                    req = _Request(window, 14, loop.create_future(), keys, ends, states)
                    if step == 1:
                        timers.clear()
                    c, t = time.process_time(), time.perf_counter()
                    (out,) = inf._forward([req])
                    if step:
                        cpu += time.process_time() - c
                        wall += time.perf_counter() - t
                    assert out.states is not None
                    states = list(out.states)
                    if rep == 0:
                        fc = out.forecast
                        for a in (fc.daily, fc.cumulative, fc.mean):
                            digest.update(np.ascontiguousarray(a).tobytes())
                        for s in states:
                            digest.update(s or b"")
                calls = n * args.steps
                if TIMING[0]:
                    assert best is not None
                    best.update({f"{k}_us_per_sku": 1e6 * v / calls for k, v in timers.items()})
                    continue
                got = {"cpu_us_per_sku": 1e6 * cpu / calls, "wall_us_per_sku": 1e6 * wall / calls}
                if best is None or got["cpu_us_per_sku"] < best["cpu_us_per_sku"]:
                    best = got
            TIMING[0] = False
            assert best is not None
            row = {"skus": n, **{k: round(v, 2) for k, v in sorted(best.items())}}
            rows.append(row)
            parts = "  ".join(f"{k.removesuffix('_us_per_sku')} {v:.1f}"
                              for k, v in row.items() if k not in ("skus",))
            print(f"{n:5d} SKUs/call  us per SKU: {parts}", flush=True)
        inf._executor.shutdown()

    asyncio.run(run())
    print(f"digest {digest.hexdigest()[:16]}  (model {forecaster.model_version}, "
          f"load {os.getloadavg()[0]:.2f})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "command": "benchmarks/served_forecast_cost.py " + " ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                if v is not None and k != "json"),
            "model_version": forecaster.model_version, "load": os.getloadavg(),
            "digest": digest.hexdigest(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
