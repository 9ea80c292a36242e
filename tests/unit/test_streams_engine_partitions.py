"""The batch engine runs a fetch's input partitions as concurrent tasks: on the LSTM served on
the loop their forecasts of a round share one forward pass, and the outputs and states are
those of processing the partitions one after the other."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from forecasting.inferencer import Inferencer, ServedForecast
from forecasting.lstm import durable
from runtime.settings import Settings
from schemas import sku_key
from streams.engine import BatchEngine
from streams.forecaster_setup import model_source
from streams.outputs import BatchOutputs
from streams.processor import BatchProcessor, ProcessorConfig, RawRecord
from streams.store import StateStore
from tests.support.lstm import save_tiny_lstm

pytest.importorskip("torch")

T0 = datetime(2011, 3, 7, 10, tzinfo=UTC)
FIXED_NOW = datetime(2011, 6, 1, tzinfo=UTC)
SKUS = {0: ("A", "B", "C"), 1: ("D", "E")}  # input partition -> its SKUs


def records(settings: Settings, days: range) -> dict[int, list[RawRecord]]:
    """Each partition's orders over `days`: several buckets per SKU, so a batch runs in
    several rounds (a forecast each time a SKU's bucket closes)."""
    out: dict[int, list[RawRecord]] = {p: [] for p in SKUS}
    for p, skus in SKUS.items():  # stock known (empty): restocks follow the forecasts
        for sku in skus:
            if days.start == 0:
                value = {"event_id": f"snap-{sku}", "type": "snapshot", "sku": sku,
                         "location": "L", "on_hand": 0,
                         "occurred_at": (T0 - timedelta(hours=1)).isoformat()}
                out[p].append(RawRecord(settings.topics.stock, p, len(out[p]),
                                        sku_key(sku, "L").encode(), json.dumps(value).encode()))
    for day in days:
        for p, skus in SKUS.items():
            for i, sku in enumerate(skus):  # every SKU its own demand
                if (day + i + p) % 4 == 3:
                    continue  # a silent day: that SKU's state catches up two buckets later
                value = {"event_id": f"{sku}{day}", "type": "placed", "sku": sku,
                         "location": "L", "quantity": 1 + (day * 7 + i + 3 * p) % 5,
                         "occurred_at": (T0 + timedelta(days=day, hours=i)).isoformat()}
                out[p].append(RawRecord(settings.topics.orders, p, len(out[p]),
                                        sku_key(sku, "L").encode(), json.dumps(value).encode()))
    return out


def predict_fn(inferencer: Inferencer) -> Any:
    async def predict(windows: np.ndarray, horizon: int, *, keys: Any = None,
                      end_days: Any = None, states: Any = None) -> ServedForecast:
        return await inferencer.serve_keyed(keys, windows, horizon, end_days, states=states)

    return predict


def per_sku(out: BatchOutputs) -> dict[tuple[str, str], list[dict[str, Any]]]:
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for name in ("forecasts", "restocks", "alerts"):
        for event in getattr(out, name):
            grouped.setdefault((name, event.sku), []).append(event.model_dump(mode="json"))
    return grouped


def close(a: Any, b: Any) -> bool:
    """Equal, floats to 1e-3 (one forward pass for both partitions instead of one each:
    float noise of the batch size can move a 4-decimal rounding)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        if np.isnan(a) or np.isnan(b):  # a day ring's days without demand data
            return bool(np.isnan(a) and np.isnan(b))
        return abs(a - b) <= 1e-3 * max(1.0, abs(b))
    return bool(a == b)


async def run(settings: Settings, concurrent: bool) -> tuple[dict, dict, list[int]]:
    forecaster, _ = model_source(settings)
    store = StateStore(4)
    out = BatchOutputs()
    async with Inferencer(forecaster, on_loop=True) as inferencer:
        processor = BatchProcessor(ProcessorConfig.from_settings(settings),
                                   predict_fn(inferencer), forecaster.model_version,
                                   now=lambda: FIXED_NOW)
        engine = BatchEngine(settings, processor)
        engine.store = store
        for days in (range(0, 5), range(5, 9), range(9, 14)):  # three fetches
            fetch = records(settings, days)
            if concurrent:
                await engine._process_partitions(fetch, out)
            else:
                for p, part in fetch.items():
                    await processor.process(part, store.partition(p), out=out)
        sizes = inferencer.stats.batch_sizes
    states = {(p, key): readable(state.to_json(), state.model_state) for p in SKUS
              for key, state in store.partition(p).items()}
    return per_sku(out), states, sizes


def readable(state: dict[str, Any], blob: bytes | None) -> dict[str, Any]:
    """The state's JSON with its durable LSTM state as numbers (h, c in float32: compared
    to a tolerance like the forecasts)."""
    assert blob is not None
    fields = durable.record(blob)
    assert fields is not None
    model = {name: np.asarray(fields[name], dtype=float).tolist()
             for name in fields.dtype.names or ()}
    return {**state, "model_state": model}


async def test_partitions_share_each_rounds_forward_pass_and_match_sequential_processing(
        tmp_path: Path) -> None:
    save_tiny_lstm(tmp_path, seed=3, hidden=8, fingerprint="partitions")
    settings = Settings(kafka_bootstrap="unused:9092", model="lstm", model_path=tmp_path,
                        default_lead_time_days=2)
    got, got_states, together = await run(settings, concurrent=True)
    expected, expected_states, alone = await run(settings, concurrent=False)
    assert got.keys() == expected.keys() and ("restocks", "D") in got
    assert all(close(got[k], expected[k]) for k in expected)
    assert close(got_states, expected_states)
    # sequentially each partition's round is a pass of its own (3 or 2 SKUs); concurrently
    # a round's pass holds both partitions' due SKUs
    assert max(alone) <= 3 and 5 in together
    assert len(together) < len(alone) and sum(together) == sum(alone)


async def test_a_partition_that_fails_stops_the_others_and_its_error_propagates() -> None:
    import asyncio

    started: list[int] = []
    cancelled: list[int] = []

    class Failing:
        async def process(self, records: list[RawRecord], table: Any, *,
                          out: BatchOutputs) -> BatchOutputs:
            started.append(table.partition)
            if table.partition == 1:
                raise ValueError("bad batch")
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.append(table.partition)
                raise
            return out

    settings = Settings(kafka_bootstrap="unused:9092")
    engine = BatchEngine(settings, Failing())  # type: ignore[arg-type]
    engine.store = StateStore(4)
    with pytest.raises(ValueError, match="bad batch"):
        await engine._process_partitions({0: [], 1: [], 2: []}, BatchOutputs())
    assert started == [0, 1, 2] and sorted(cancelled) == [0, 2]
