"""The inference benchmark runs end to end and reports every figure the README quotes."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from forecasting.lstm.bench import run_inference_bench


def test_the_inference_bench_reports_rates_per_batch_and_batcher_latency() -> None:
    out = run_inference_bench(batch_sizes=(3,), window=10, device="cpu", seconds=0.01,
                              requests=16)
    cpu = out["results"]["cpu"]
    (row,) = cpu["by_batch"]
    assert row["batch"] == 3
    for key in ("full_window", "incremental_step", "incremental_forecast"):
        assert row[f"{key}_series_per_s"] > 0 and row[f"{key}_series_per_cpu_s"] > 0
    for mode in ("full_window", "keyed_incremental"):
        lat = cpu["microbatcher"][mode]
        assert lat["requests"] >= 16 and 0 < lat["p50_ms"] <= lat["p99_ms"]
        assert lat["series_per_s"] > 0 and lat["series_per_cpu_s"] > 0
