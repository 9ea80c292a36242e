"""The LSTM serving on a real broker: a worker SIGKILLed mid-stream and restarted resumes every
SKU's recurrent state from the changelog, so every forecast it (or the dead one) published
equals the forecast of an uninterrupted run. The stream's window is kept short (7 buckets
over 20 days), so a recovery that re-encoded the window would not match (it misses by 1.44).

The batch engine; the Faust engine's twin is tests/integration/test_faust_lstm_recovery.py."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from runtime.settings import Settings
from schemas import ForecastEvent, sku_key
from shelfcast.worker_process import WorkerProcess
from streams.forecaster_setup import served_forecaster
from streams.lag import LagProbe
from streams.processor import BatchProcessor, ProcessorConfig, RawRecord
from streams.store import StateStore
from streams.topics import ensure_topics
from tests.support.kafka import produce, read_all, wait_lag

torch = pytest.importorskip("torch")

T0 = datetime(2011, 3, 7, tzinfo=UTC)
SKUS, ORDERS, DAYS = 40, 6000, 20


def save_model(directory: Path) -> str:
    from forecasting.lstm import LSTMConfig, LSTMForecaster, LSTMNet
    from forecasting.lstm.artifact import read_metadata, save_artifact
    from forecasting.lstm.features import INPUT_DIM

    torch.manual_seed(11)
    model = LSTMForecaster(LSTMNet(INPUT_DIM, LSTMConfig(horizon=14, hidden=16,
                                                         head_hidden=16)), device="cpu")
    save_artifact(model, directory, data_fingerprint="recovery-test")
    return str(read_metadata(directory)["model_version"])


def orders() -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(ORDERS):
        s = (i * 7919) % SKUS
        if s % 4 == 0 and (i * DAYS // ORDERS) % 3 == 1:
            continue  # some SKUs skip days: their states catch up several buckets at once
        when = T0 + timedelta(days=DAYS * i / ORDERS)
        out.append((sku_key(f"S{s}", "wh").encode(), json.dumps({
            "event_id": f"o{i}", "type": "placed", "sku": f"S{s}", "location": "wh",
            "quantity": 1 + (i * 31) % 5, "occurred_at": when.isoformat()}).encode()))
    return out


async def uninterrupted(settings: Settings, records: list[tuple[bytes, bytes]]
                        ) -> dict[tuple[str, datetime], list[float]]:
    """(sku, bucket) -> mean forecast of one worker that never stopped."""
    out: dict[tuple[str, datetime], list[float]] = {}
    async with served_forecaster(settings) as (forecaster, predict):
        p = BatchProcessor(ProcessorConfig.from_settings(settings), predict,
                           forecaster.model_version)
        table = StateStore(settings.topic_partitions).partition(0)  # every record: partition 0
        raw = [RawRecord(settings.topics.orders, 0, i, k, v) for i, (k, v) in enumerate(records)]
        for i in range(0, len(raw), 500):
            for fc in (await p.process(raw[i:i + 500], table)).forecasts:
                out[(fc.sku, fc.bucket)] = fc.mean
    return out


@pytest.mark.timeout(300)
async def test_a_killed_lstm_worker_resumes_its_states_and_forecasts_as_if_never_stopped(
    kafka_bootstrap: str, fresh_topic_prefix: str, tmp_path: Path
):
    version = save_model(tmp_path / "model")
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"{fresh_topic_prefix}.",
                        shop_topic_prefix=f"{fresh_topic_prefix}.shop.",
                        app_id=f"{fresh_topic_prefix}-app", topic_partitions=4,
                        engine="batch", take_max=150, kafka_session_timeout_s=6,
                        model="lstm", model_path=tmp_path / "model", window_buckets=7,
                        max_wait_ms=1)
    await ensure_topics(settings)
    records = orders()
    log = tmp_path / "worker.log"
    first = WorkerProcess(settings, log, name="worker-1").start()
    second = WorkerProcess(settings, log, name="worker-2")
    try:
        await asyncio.to_thread(first.wait_ready, 120)
        async with LagProbe(settings) as probe:
            await produce(settings, settings.topics.orders, records)
            await wait_lag(probe, int(len(records) * 0.5), 120)
            first.kill()  # mid-stream: states in memory, some batches uncommitted
            killed_at_lag = await probe.lag()
            second.start()
            await asyncio.to_thread(second.wait_ready, 120)
            await wait_lag(probe, 0, 150)
    finally:
        first.kill()
        second.stop()
    assert 0 < killed_at_lag < len(records), "the kill should land mid-stream"

    expected = await uninterrupted(settings, records)
    published = [ForecastEvent.model_validate_json(r.value)
                 for r in await read_all(settings, settings.topics.forecasts)]
    assert {f.model_version for f in published} == {version}
    got: dict[tuple[str, datetime], list[list[float]]] = {}
    for f in published:  # a replayed batch may publish a forecast again: every copy counts
        got.setdefault((f.sku, f.bucket), []).append(f.mean)
    assert got.keys() == expected.keys()
    worst = max(float(np.max(np.abs(np.asarray(m) - expected[k]))) for k, ms in got.items()
                for m in ms)
    assert worst < 1e-3, f"forecasts after recovery differ by up to {worst}"
