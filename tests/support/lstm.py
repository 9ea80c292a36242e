"""Tiny LSTM artifacts and order streams for the tests that serve the LSTM in the stream."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from runtime.settings import Settings
from schemas import sku_key
from streams.forecaster_setup import served_forecaster
from streams.processor import BatchProcessor, ProcessorConfig, RawRecord
from streams.store import StateStore

T0 = datetime(2011, 3, 7, tzinfo=UTC)

Forecasts = dict[tuple[str, datetime], list[float]]


def save_tiny_lstm(directory: Path, *, seed: int, hidden: int, fingerprint: str) -> str:
    """An untrained (seeded) LSTM artifact in `directory`; returns its model version."""
    import torch

    from forecasting.lstm import LSTMConfig, LSTMForecaster, LSTMNet
    from forecasting.lstm.artifact import read_metadata, save_artifact
    from forecasting.lstm.features import INPUT_DIM

    torch.manual_seed(seed)
    model = LSTMForecaster(LSTMNet(INPUT_DIM, LSTMConfig(horizon=14, hidden=hidden,
                                                         head_hidden=hidden)), device="cpu")
    save_artifact(model, directory, data_fingerprint=fingerprint)
    return str(read_metadata(directory)["model_version"])


def daily_orders(settings: Settings, day0: int, days: int, *,
                 t0: datetime = T0 + timedelta(hours=10)) -> list[RawRecord]:
    """Three SKUs (A, B, C at L) selling 3 a day (at `t0`'s hour) from day `day0` on."""
    out = []
    for d in range(day0, day0 + days):
        for sku in ("A", "B", "C"):
            value = {"event_id": f"{sku}{d}", "type": "placed", "sku": sku, "location": "L",
                     "quantity": 3, "occurred_at": (t0 + timedelta(days=d)).isoformat()}
            out.append(RawRecord(settings.topics.orders, 0, len(out), sku_key(sku, "L").encode(),
                                 json.dumps(value).encode()))
    return out


def recovery_orders(skus: int = 40, orders: int = 6000, days: int = 20
                    ) -> list[tuple[bytes, bytes]]:
    """(key, value) orders of `skus` SKUs over `days` days; some SKUs skip days, so their
    carried states catch up several buckets at once."""
    out = []
    for i in range(orders):
        s = (i * 7919) % skus
        if s % 4 == 0 and (i * days // orders) % 3 == 1:
            continue
        when = T0 + timedelta(days=days * i / orders)
        out.append((sku_key(f"S{s}", "wh").encode(), json.dumps({
            "event_id": f"o{i}", "type": "placed", "sku": f"S{s}", "location": "wh",
            "quantity": 1 + (i * 31) % 5, "occurred_at": when.isoformat()}).encode()))
    return out


async def uninterrupted_run(settings: Settings, records: list[tuple[bytes, bytes]]
                            ) -> tuple[Forecasts, dict[str, dict[int, float]]]:
    """What one worker that never stopped makes of `records` (all on input partition 0):
    (sku, bucket) -> mean forecast, and sku@location -> its demand buckets."""
    forecasts: Forecasts = {}
    async with served_forecaster(settings) as (forecaster, predict):
        p = BatchProcessor(ProcessorConfig.from_settings(settings), predict,
                           forecaster.model_version)
        table = StateStore(settings.topic_partitions).partition(0)
        raw = [RawRecord(settings.topics.orders, 0, i, k, v) for i, (k, v) in enumerate(records)]
        for i in range(0, len(raw), 500):
            for fc in (await p.process(raw[i:i + 500], table)).forecasts:
                forecasts[(fc.sku, fc.bucket)] = list(np.asarray(fc.mean, dtype=float))
    return forecasts, {key: dict(state.demand) for key, state in table.items()}


async def published_means(settings: Settings) -> tuple[set[str], dict[tuple[str, datetime],
                                                                      list[list[float]]]]:
    """The forecasts topic as (model versions seen, (sku, bucket) -> every published mean): a
    replayed batch may publish a forecast again, and every copy counts."""
    from schemas import ForecastEvent
    from tests.support.kafka import read_all

    published = [ForecastEvent.model_validate_json(r.value)
                 for r in await read_all(settings, settings.topics.forecasts)]
    got: dict[tuple[str, datetime], list[list[float]]] = {}
    for f in published:
        got.setdefault((f.sku, f.bucket), []).append(f.mean)
    return {f.model_version for f in published}, got


def worst_difference(got: dict[tuple[str, datetime], list[list[float]]],
                     expected: Forecasts) -> float:
    """The largest absolute gap between any published mean and the uninterrupted run's."""
    return max(float(np.max(np.abs(np.asarray(m) - expected[k]))) for k, ms in got.items()
               for m in ms)


def fit_small_mix(panel: Any, **option: Any) -> tuple[Any, Any]:
    """A small `lstm_lgbm` (2 epochs, 8 hidden, 20 trees) with one LSTM option, fitted on
    all but the last 7 days of `panel`; returns (model, the history it was fitted on)."""
    import torch

    from forecasting.combination import LSTMLightGBMForecaster
    from forecasting.registry import make_forecaster

    torch.set_num_threads(1)
    model = make_forecaster("lstm_lgbm", device="cpu", horizon=7, max_epochs=2, hidden=8,
                            head_hidden=8, val_days=21, **option)
    assert isinstance(model, LSTMLightGBMForecaster)
    model.lightgbm_options = {"n_estimators": 20, "num_leaves": 7, "min_child_samples": 10}
    hist = panel.head(panel.n_days - 7)
    model.fit(hist)
    return model, hist


def train_small_lstm(panel: Any, **over: Any) -> Any:
    """A small LSTM (3 epochs, 8 hidden, no year-ago inputs) trained on `panel` with the
    config fields `over` changed; returns its forecaster."""
    import torch

    from forecasting.lstm import LSTMConfig, train_lstm

    torch.set_num_threads(1)
    base: dict[str, Any] = {"horizon": 7, "hidden": 8, "head_hidden": 8, "max_epochs": 3,
                            "val_days": 21, "year_ago": False, "year_ago_prior": False}
    return train_lstm(panel, LSTMConfig(**{**base, **over}), device="cpu").forecaster
