"""A key that arrives on two input partitions (a shop's producer that picked partitions by
hand, or changed its partitioner) is two states, one per partition (streams/store.py) — for
the model's carried state too: each partition's SKU state is forecast from its own demand,
as if the other partition did not exist, not from a recurrent state the other one stepped."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from forecasting.inferencer import Inferencer, ServedForecast
from runtime.settings import Settings
from schemas import sku_key
from streams.forecaster_setup import model_source
from streams.outputs import BatchOutputs
from streams.processor import BatchProcessor, ProcessorConfig, RawRecord
from streams.store import StateStore
from tests.support.lstm import save_tiny_lstm

pytest.importorskip("torch")

T0 = datetime(2011, 3, 7, 10, tzinfo=UTC)
FIXED_NOW = datetime(2011, 6, 1, tzinfo=UTC)


def orders(settings: Settings, partition: int, days: range) -> list[RawRecord]:
    """SKU A's orders as one partition sees them: each partition its own quantities."""
    out: list[RawRecord] = []
    for day in days:
        value = {"event_id": f"p{partition}-{day}", "type": "placed", "sku": "A",
                 "location": "L", "quantity": 1 + (day * (3 + 4 * partition)) % 9,
                 "occurred_at": (T0 + timedelta(days=day, hours=partition)).isoformat()}
        out.append(RawRecord(settings.topics.orders, partition, day - days.start,
                             sku_key("A", "L").encode(), json.dumps(value).encode()))
    return out


async def forecasts(settings: Settings, partitions: tuple[int, ...]) -> dict[int, list[Any]]:
    """Each partition's forecasts of A, the partitions' fetches processed in turn."""
    forecaster, _ = model_source(settings)
    store = StateStore(2)
    outs = {p: BatchOutputs() for p in partitions}
    async with Inferencer(forecaster, on_loop=True) as inferencer:
        async def predict(windows: np.ndarray, horizon: int, *, keys: Any = None,
                          end_days: Any = None, states: Any = None) -> ServedForecast:
            return await inferencer.serve_keyed(keys, windows, horizon, end_days, states=states)

        processor = BatchProcessor(ProcessorConfig.from_settings(settings), predict,
                                   forecaster.model_version, now=lambda: FIXED_NOW)
        for days in (range(0, 6), range(6, 12)):
            for p in partitions:
                await processor.process(orders(settings, p, days), store.partition(p),
                                        out=outs[p])
    return {p: [f.model_dump(mode="json")["quantiles"] for f in outs[p].forecasts]
            for p in partitions}


async def test_each_partitions_state_of_a_key_is_forecast_from_its_own_demand(
        tmp_path: Path) -> None:
    save_tiny_lstm(tmp_path, seed=5, hidden=8, fingerprint="two-partitions")
    settings = Settings(kafka_bootstrap="unused:9092", model="lstm", model_path=tmp_path)
    both = await forecasts(settings, (0, 1))
    alone = {p: (await forecasts(settings, (p,)))[p] for p in (0, 1)}
    assert len(both[0]) == len(alone[0]) >= 5 and len(both[1]) == len(alone[1])
    assert both[0] != both[1]  # the two partitions' demand differs, and so do the forecasts
    for p in (0, 1):
        np.testing.assert_allclose(np.asarray(both[p], dtype=float),
                                   np.asarray(alone[p], dtype=float), rtol=1e-4, atol=1e-3)
