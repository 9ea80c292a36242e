"""The batch engine on a real broker: a worker SIGKILLed mid-stream and restarted recovers its
state from the changelog. The final state equals a recomputation of the same events, and no
restock id ever carries two different decisions (a replay may resend the same one)."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from forecasting import make_forecaster
from runtime.settings import Settings
from schemas import RestockEvent, sku_key
from shelfcast.worker_process import WorkerProcess
from streams.changelog import changelog_topic, decode_state
from streams.lag import LagProbe
from streams.processor import BatchProcessor, ProcessorConfig, RawRecord
from streams.topics import ensure_topics
from streams.worker import local_predict
from tests.support.kafka import produce, read_all, wait_lag

T0 = datetime(2011, 3, 7, tzinfo=UTC)
SKUS, ORDERS, DAYS = 40, 6000, 20


def shop(settings: Settings) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    snapshots = [(sku_key(f"S{s}", "wh").encode(), json.dumps({
        "event_id": f"snap-{s}", "type": "snapshot", "sku": f"S{s}", "location": "wh",
        "on_hand": 30, "occurred_at": (T0 - timedelta(hours=1)).isoformat()}).encode())
        for s in range(SKUS)]
    orders = []
    for i in range(ORDERS):
        s = (i * 7919) % SKUS
        when = T0 + timedelta(days=DAYS * i / ORDERS)
        orders.append((sku_key(f"S{s}", "wh").encode(), json.dumps({
            "event_id": f"o{i}", "type": "placed", "sku": f"S{s}", "location": "wh",
            "quantity": 1 + i % 3, "occurred_at": when.isoformat()}).encode()))
    return snapshots, orders


async def recompute(settings: Settings, snapshots, orders) -> tuple[dict, dict[str, int]]:
    model = make_forecaster(settings.model)
    p = BatchProcessor(ProcessorConfig.from_settings(settings), local_predict(model),
                       model.model_version)
    t = settings.topics
    records = [RawRecord(t.stock, 0, i, k, v) for i, (k, v) in enumerate(snapshots)]
    records += [RawRecord(t.orders, 0, i, k, v) for i, (k, v) in enumerate(orders)]
    table: dict = {}
    restocks: dict[str, int] = {}

    for i in range(0, len(records), 500):
        out = await p.process(records[i:i + 500], table)
        restocks.update({r.restock_id: r.quantity for r in out.restocks})
    return table, restocks


@pytest.mark.timeout(240)
async def test_killed_worker_recovers_state_from_the_changelog(
    kafka_bootstrap: str, fresh_topic_prefix: str, tmp_path: Path
):
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"{fresh_topic_prefix}.",
                        shop_topic_prefix=f"{fresh_topic_prefix}.shop.",
                        app_id=f"{fresh_topic_prefix}-app", topic_partitions=4,
                        engine="batch", take_max=150, kafka_session_timeout_s=6)
    await ensure_topics(settings)
    snapshots, orders = shop(settings)
    log = tmp_path / "worker.log"
    first = WorkerProcess(settings, log, name="worker-1").start()
    second = WorkerProcess(settings, log, name="worker-2")
    try:
        await asyncio.to_thread(first.wait_ready, 120)
        async with LagProbe(settings) as probe:
            # stock first, processed before any order: the recomputation sees the same order
            await produce(settings, settings.topics.stock, snapshots)
            await wait_lag(probe, 0, 60)
            await produce(settings, settings.topics.orders, orders)
            await wait_lag(probe, int(ORDERS * 0.6), 90)
            first.kill()  # mid-stream: state in memory, some batches uncommitted
            killed_at_lag = await probe.lag()
            second.start()
            await asyncio.to_thread(second.wait_ready, 120)
            await wait_lag(probe, 0, 120)
    finally:
        first.kill()
        second.stop()
    assert 0 < killed_at_lag < ORDERS, "the kill should land mid-stream"
    assert "recovered" in log.read_text()

    expected_table, expected_restocks = await recompute(settings, snapshots, orders)
    state: dict = {}
    for r in await read_all(settings, changelog_topic(settings)):
        state[r.key.decode()] = decode_state(r.value)
    assert state.keys() == expected_table.keys()
    for key, value in expected_table.items():
        assert state[key] == value, key

    decisions: dict[str, set[int]] = defaultdict(set)
    for r in await read_all(settings, settings.topics.restock):
        event = RestockEvent.model_validate_json(r.value)
        decisions[event.restock_id].add(event.quantity)
    assert expected_restocks, "the stream should cause restocks"
    assert decisions.keys() == expected_restocks.keys()
    assert {k: min(v) for k, v in decisions.items()} == expected_restocks
    assert all(len(v) == 1 for v in decisions.values()), "one decision per restock id"
