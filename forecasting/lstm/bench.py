"""Inference benchmark: series/s by batch size (full window vs incremental), batcher latency.

With `warmup_days`, the full window is also measured with the bounded cold start
(`LSTMForecaster.encode(..., warmup_days=W)`: the LSTM over the last W days, the year-ago
inputs from the whole window) next to the exact whole-window recompute."""

from __future__ import annotations

import asyncio
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from forecasting.calibration import IntervalCalibration
from forecasting.errors import InvalidWindowError
from forecasting.inferencer import Inferencer
from forecasting.lstm.device import auto_device
from forecasting.lstm.features import INPUT_DIM
from forecasting.lstm.forecaster import LSTMForecaster
from forecasting.lstm.model import LSTMConfig, LSTMNet

__all__ = ["run_inference_bench"]

END = np.datetime64("2011-06-01")


def _rate(fn: Callable[[], object], n_series: int, seconds: float) -> dict[str, float]:
    """Series per wall second and per CPU second of this process (on a shared machine the
    CPU figure is what one free core would do; with 1 torch thread they agree when idle)."""
    fn()  # warm-up (allocations, lazy init, CUDA context)
    runs, t0, c0 = 0, time.perf_counter(), time.process_time()
    while True:
        fn()
        runs += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            break
    cpu = max(time.process_time() - c0, 1e-9)
    return {"series_per_s": n_series * runs / elapsed, "ms_per_batch": 1000 * elapsed / runs,
            "series_per_cpu_s": n_series * runs / cpu}


def _windows(rng: np.random.Generator, n: int, window: int) -> np.ndarray:
    rate = rng.gamma(0.8, 5.0, (n, 1))
    w: np.ndarray = rng.poisson(rate, (n, window)).astype(np.float64)
    return w * (rng.random((n, window)) < 0.6)


async def _latency(model: LSTMForecaster, requests: int, window: int, max_batch: int,
                   max_wait_ms: float, keyed: bool, concurrency: int) -> dict[str, float]:
    rng = np.random.default_rng(1)
    data = _windows(rng, concurrency, window + 1)
    lat: list[float] = []
    async with Inferencer(model, max_batch=max_batch, max_wait_ms=max_wait_ms) as inf:
        if keyed:  # warm every key's state: the timed requests are one-bucket steps
            await inf.predict_keyed([f"k{i}" for i in range(concurrency)], data[:, :-1], 14,
                                    END - np.timedelta64(1, "D"))

        async def client(i: int, n: int) -> None:
            row = data[i : i + 1]
            for _ in range(n):
                t0 = time.perf_counter()
                if keyed:
                    await inf.predict_keyed([f"k{i}"], row, 14, END)
                else:
                    await inf.predict(row[:, 1:], 14)
                lat.append(time.perf_counter() - t0)

        per = max(1, requests // concurrency)
        t0, c0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(client(i, per) for i in range(concurrency)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        stats = inf.stats
    arr = np.array(lat) * 1000
    return {"requests": float(arr.size), "concurrency": float(concurrency),
            "max_batch": float(max_batch), "max_wait_ms": max_wait_ms,
            "p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99)),
            "series_per_s": arr.size / wall,
            # the event loop and the batcher's worker thread together (can exceed 1 core)
            "series_per_cpu_s": arr.size / max(cpu, 1e-9), "cpu_s": cpu, "wall_s": wall,
            "load_average_1m": os.getloadavg()[0],
            "mean_batch": float(np.mean(stats.batch_sizes)) if stats.batch_sizes else 0.0}


def run_inference_bench(
    *,
    model_dir: Path | None = None,
    batch_sizes: Sequence[int] = (1, 8, 64, 512, 1024, 4096, 16384),
    window: int = 56,
    device: str = "auto",
    threads: int = 1,
    seconds: float = 1.0,
    requests: int = 20_000,
    warmup_days: int | None = None,
) -> dict[str, Any]:
    """Measure the LSTM on CPU (and on CUDA when present, or only `device` if given)."""
    if warmup_days is not None and warmup_days < 1:
        raise InvalidWindowError(f"warmup_days must be >= 1 (or None), got {warmup_days}")
    torch.set_num_threads(threads)
    if model_dir is not None:
        from forecasting.lstm.artifact import load_artifact

        base = load_artifact(model_dir, device="cpu")
        net = base.net
        scaling = (base.log_scale_mean, base.log_scale_std)
        calibration = base.calibration
    else:
        torch.manual_seed(0)
        net = LSTMNet(INPUT_DIM, LSTMConfig())
        scaling = (0.0, 1.0)
        # an identity calibration: the forecast pays the same product a trained model's does
        levels = tuple(net.config.levels)
        calibration = (IntervalCalibration(levels, daily=levels, cumulative=levels)
                       if net.config.calibrate else None)
    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    if device != "auto":
        devices = [str(auto_device(device))]
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {
        "model": str(model_dir) if model_dir else "untrained default LSTMConfig()",
        "config": net.config.to_json(), "window": window, "warmup_days": warmup_days,
        "calibration": calibration is not None,
        "torch": torch.__version__,
        "threads": threads, "cpu": platform.processor() or platform.machine(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_before": list(os.getloadavg()),
        "results": {},
    }
    for dev in devices:
        model = LSTMForecaster(net, log_scale_mean=scaling[0], log_scale_std=scaling[1],
                               device=dev, end_day=lambda: END, calibration=calibration)
        rows: list[dict[str, float]] = []
        for b in batch_sizes:
            w = _windows(rng, b, window)
            state = model.encode(w, END - np.timedelta64(1, "D"))
            new = w[:, -1]

            def full_fn(m: LSTMForecaster = model, w: np.ndarray = w) -> object:
                return m.predict(w, 14, end_days=END)

            # consume=True as a stream's keyed store steps: a year-ago model's day ring takes
            # the new day in place (the recurrent state is new each call either way).
            def step_fn(m: LSTMForecaster = model, s: Any = state, v: np.ndarray = new) -> object:
                return m.update(s, v, consume=True)

            def step_fc_fn(m: LSTMForecaster = model, s: Any = state,
                           v: np.ndarray = new) -> object:
                return m.forecast(m.update(s, v, consume=True), 14)

            full = _rate(full_fn, b, seconds)
            warm: dict[str, float] = {}
            if warmup_days is not None:
                def warm_fn(m: LSTMForecaster = model, w: np.ndarray = w,
                            days: int = warmup_days) -> object:
                    return m.forecast(m.encode(w, END, warmup_days=days), 14)

                rate = _rate(warm_fn, b, seconds)
                warm = {"full_window_warmup_series_per_s": rate["series_per_s"],
                        "full_window_warmup_series_per_cpu_s": rate["series_per_cpu_s"],
                        "full_warmup_ms_per_batch": rate["ms_per_batch"]}
            step = _rate(step_fn, b, seconds)
            step_fc = _rate(step_fc_fn, b, seconds)
            rows.append({"batch": float(b), "full_window_series_per_s": full["series_per_s"],
                         "incremental_step_series_per_s": step["series_per_s"],
                         "incremental_forecast_series_per_s": step_fc["series_per_s"],
                         "full_window_series_per_cpu_s": full["series_per_cpu_s"],
                         "incremental_step_series_per_cpu_s": step["series_per_cpu_s"],
                         "incremental_forecast_series_per_cpu_s": step_fc["series_per_cpu_s"],
                         "full_ms_per_batch": full["ms_per_batch"],
                         "incremental_forecast_ms_per_batch": step_fc["ms_per_batch"], **warm,
                         "load_average_1m": os.getloadavg()[0]})
        latency = {
            "full_window": asyncio.run(_latency(model, requests, window, 1024, 5.0, False, 256)),
            "keyed_incremental": asyncio.run(_latency(model, requests, window, 1024, 5.0, True,
                                                      256)),
        }
        out["results"][dev] = {"by_batch": rows, "microbatcher": latency}
    out["load_average_after"] = list(os.getloadavg())
    return out
