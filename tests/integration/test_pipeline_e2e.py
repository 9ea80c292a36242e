"""End to end on a real Kafka broker and PostgreSQL: order events in, plan rows out.

A stream worker runs as its own process (as in production); the optimizer runs in this
event loop. The shop's events include a malformed record and a redelivered order.
"""

import asyncio
import json
import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from optimizer.service import OptimizerService
from runtime.settings import Settings
from schemas import AlertEvent, DeadLetter, ForecastEvent, PlanEvent, RestockEvent
from shelfcast.worker_process import WorkerProcess
from streams.changelog import changelog_topic
from streams.store import key_partition
from streams.topics import ensure_topics
from tests.support.kafka import read_all

T0 = datetime(2011, 3, 7, 10, 0, tzinfo=UTC)
DAYS = 10


def shop_events(settings: Settings) -> list[tuple[str, bytes]]:
    t = settings.topics

    def ev(topic: str, value: dict) -> tuple[str, bytes]:
        return topic, json.dumps(value).encode()

    events = [
        ev(t.catalog, {"sku": "MUG", "location": "wh1", "lead_time_days": 2, "review_days": 1,
                       "service_level": 0.95, "case_pack": 6, "moq": 12, "unit_cost": 1.5,
                       "supplier": "acme"}),
        ev(t.stock, {"event_id": "snap-1", "type": "snapshot", "sku": "MUG", "location": "wh1",
                     "on_hand": 30, "occurred_at": (T0 - timedelta(hours=2)).isoformat()}),
    ]
    for d in range(DAYS):
        order = {"event_id": f"ord-{d}", "type": "placed", "sku": "MUG", "location": "wh1",
                 "quantity": 4, "occurred_at": (T0 + timedelta(days=d)).isoformat()}
        events.append(ev(t.orders, order))
        if d == 3:
            events.append(ev(t.orders, order))  # a producer retry: same event_id
            events.append((t.orders, b'{"event_id": "broken", "quantity": '))
    return events


async def collect(settings: Settings, until: float, quiet_s: float = 3.0
                  ) -> dict[str, list[bytes]]:
    """Everything on the output topics once each has records and none came for `quiet_s`
    (a batch may close several buckets, each with its own forecast and restock)."""
    t = settings.topics
    seen: dict[str, list[bytes]] = {t.forecasts: [], t.restock: [], t.dlq: [], t.plans: [],
                                    t.demand: []}
    consumer = AIOKafkaConsumer(*seen, bootstrap_servers=settings.kafka_bootstrap,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    last_record = time.monotonic()
    try:
        while time.monotonic() < until:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                seen[tp.topic].extend(r.value for r in records)
                last_record = time.monotonic()
            if all(seen.values()) and time.monotonic() - last_record >= quiet_s:
                break
    finally:
        await consumer.stop()
    return seen


@pytest.mark.timeout(240)
async def test_orders_become_forecasts_restocks_and_plan_rows(
    kafka_bootstrap: str, pg_database: str, fresh_topic_prefix: str, tmp_path: Path
):
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"{fresh_topic_prefix}.",
                        shop_topic_prefix=f"{fresh_topic_prefix}.shop.",
                        app_id=f"{fresh_topic_prefix}-app", topic_partitions=2,
                        # the moving average: "every closed day sold 4" is read off its mean
                        model="moving_average")
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    stop = asyncio.Event()
    optimizer = OptimizerService(settings, pg_database)
    optimizer_task = asyncio.create_task(optimizer.run(stop))
    try:
        await asyncio.to_thread(worker.wait_ready, 120)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for topic, value in shop_events(settings):
                await producer.send_and_wait(topic, key=b"MUG@wh1", value=value)
        finally:
            await producer.stop()
        seen = await collect(settings, until=time.monotonic() + 90)
        restock_ids = {RestockEvent.model_validate_json(v).restock_id
                       for v in seen[settings.topics.restock]}
        deadline = time.monotonic() + 30
        while ((optimizer.counters.restocks_in < len(restock_ids)
                or optimizer.counters.demand_in < len(seen[settings.topics.demand]))
               and time.monotonic() < deadline):
            await asyncio.sleep(0.2)  # let the optimizer plan (and score) what the consumer saw
    finally:
        stop.set()
        await optimizer_task
        worker.stop()
    t = settings.topics
    assert seen[t.forecasts], f"no forecast; worker log:\n{worker.log_tail()}"
    forecast = ForecastEvent.model_validate_json(seen[t.forecasts][-1])
    assert forecast.sku == "MUG" and forecast.model_version
    # the redelivered order was counted once: every closed day sold exactly 4
    assert forecast.mean[0] == pytest.approx(4.0)

    restocks = [RestockEvent.model_validate_json(v) for v in seen[t.restock]]
    assert restocks and restocks[0].supplier == "acme"
    assert all(r.quantity % 6 == 0 and r.quantity >= 12 for r in restocks)

    [dead] = [DeadLetter.model_validate_json(v) for v in seen[t.dlq]]
    assert dead.source_topic == t.orders and dead.error_kind == "invalid_json"

    plans = [PlanEvent.model_validate_json(v) for v in seen[t.plans]]
    assert plans[0].supplier == "acme"
    conn = await asyncpg.connect(pg_database)
    try:
        rows = await conn.fetch("SELECT restock_id FROM plan_lines")
        history = await conn.fetch("SELECT bucket_start, quantity, model_version"
                                   " FROM demand_history ORDER BY bucket_start")
        scored = await conn.fetchval("SELECT count(*) FROM forecast_scores")
    finally:
        await conn.close()
    assert sorted(r["restock_id"] for r in rows) == sorted({r.restock_id for r in restocks})
    # the actuals: every closed day once (day 9 is still open), 4 units each (the retried
    # order counted once); each day after the first scored on the forecast made for it
    day0 = T0.replace(hour=0)
    assert [(r["bucket_start"], r["quantity"]) for r in history] == [
        (day0 + timedelta(days=d), 4.0) for d in range(DAYS - 1)]
    assert [r["model_version"] is not None for r in history] == [False] + [True] * (DAYS - 2)
    assert scored == DAYS - 2


@pytest.mark.timeout(240)
async def test_a_restock_never_received_becomes_overdue_and_the_risk_ignores_it(
    kafka_bootstrap: str, fresh_topic_prefix: str, tmp_path: Path
):
    """A shop on librdkafka (kcat, confluent-kafka): its key sits on the partition CRC32
    picks. No receipt ever comes: the first restock (lead 2 days) is overdue after lead time
    + SHELFCAST_RESTOCK_GRACE_BUCKETS (2), an overdue_restock alert says so, and the stock-out
    risk, counting only what can still arrive, raises a stock-out alert (counting the overdue
    restock, the position looked healthy and none came). The state is on the changelog
    partition of the key's input partition."""
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"{fresh_topic_prefix}.",
                        shop_topic_prefix=f"{fresh_topic_prefix}.shop.",
                        app_id=f"{fresh_topic_prefix}-app", topic_partitions=4,
                        restock_grace_buckets=2, model="moving_average")
    t = settings.topics
    key = b"TEE-BLK@berlin"
    partition = zlib.crc32(key) % 4  # librdkafka's consistent_random; murmur2 would say 2
    assert (partition, key_partition(key, 4)) == (3, 2)
    events = [
        (t.catalog, {"sku": "TEE-BLK", "location": "berlin", "lead_time_days": 2,
                     "review_days": 1, "service_level": 0.95, "case_pack": 6, "moq": 12,
                     "unit_cost": 1.5, "supplier": "acme"}),
        (t.stock, {"event_id": "snap-1", "type": "snapshot", "sku": "TEE-BLK",
                   "location": "berlin", "on_hand": 30,
                   "occurred_at": (T0 - timedelta(hours=2)).isoformat()}),
        *[(t.orders, {"event_id": f"ord-{d}", "type": "placed", "sku": "TEE-BLK",
                      "location": "berlin", "quantity": 4,
                      "occurred_at": (T0 + timedelta(days=d)).isoformat()})
          for d in range(12)],
    ]
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        await asyncio.to_thread(worker.wait_ready, 120)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for topic, value in events:
                await producer.send_and_wait(topic, key=key, value=json.dumps(value).encode(),
                                             partition=partition)
        finally:
            await producer.stop()
        alerts: list[AlertEvent] = []
        restocks: list[RestockEvent] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not (
                {"overdue_restock", "stockout_risk"} <= {a.kind for a in alerts}):
            await asyncio.sleep(1.0)
            alerts = [AlertEvent.model_validate_json(r.value)
                      for r in await read_all(settings, t.alerts)]
        restocks = [RestockEvent.model_validate_json(r.value)
                    for r in await read_all(settings, t.restock)]
        changelog = await read_all(settings, changelog_topic(settings))
    finally:
        worker.stop()
    first = min(restocks, key=lambda r: r.bucket)
    overdue = [a for a in alerts if a.kind == "overdue_restock"]
    assert overdue, f"no overdue alert; alerts {alerts}; worker log:\n{worker.log_tail()}"
    assert overdue[0].details["restock_ids"] == [first.restock_id]
    assert overdue[0].details["units"] == first.quantity
    # the only stock-out alert comes once the restock is overdue, and leaves its units out
    [stockout] = [a for a in alerts if a.kind == "stockout_risk"]
    assert stockout.details["overdue_units"] == first.quantity
    assert stockout.details["probability"] >= 0.2
    assert {r.partition for r in changelog if r.key == key} == {partition}
