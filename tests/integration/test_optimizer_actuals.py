"""Demand actuals through the optimizer on a real Kafka broker and a real PostgreSQL.

The actuals land in `demand_history` once per bucket (the last quantity, the first forecast)
however often they are delivered; each forecast is scored once; a level shift opens one
`model_drift` episode whose alert reaches the alerts topic.
"""

import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from forecasting.accuracy import DriftConfig
from optimizer.service import OptimizerService
from schemas import AlertEvent, DemandEvent, encode, sku_key
from tests.support.kafka import (
    create_optimizer_topics,
    isolated_settings,
    produce,
    read_expected,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

DAY0 = datetime(2011, 3, 1, tzinfo=UTC)
LEVELS = [0.1, 0.5, 0.9]


def actual(sku: str, location: str, day: int, quantity: float, *, forecast: bool = True
           ) -> tuple[str, bytes]:
    event = DemandEvent(
        sku=sku, location=location, bucket=DAY0 + timedelta(days=day), bucket_seconds=86_400,
        quantity=quantity, **({"model_version": "moving_average-1", "forecast_levels": LEVELS,
                               "forecast_quantiles": [3.0, 5.0, 7.0]} if forecast else {}))
    return sku_key(sku, location), encode(event)


async def test_actuals_land_once_per_bucket_under_redelivery(kafka_bootstrap, pg_database):
    settings = isolated_settings(kafka_bootstrap)
    await create_optimizer_topics(settings)
    skus = [("MUG", "wh1"), ("TEA", "wh1"), ("MUG", "wh2")]
    records = []
    for day in range(10):
        for sku, location in skus:
            records.append(actual(sku, location, day, 5.0 + day % 3))
            if day:  # the previous bucket again, revised by a late order: 1 more unit
                records.append(actual(sku, location, day - 1, 6.0 + (day - 1) % 3,
                                      forecast=False))
    records.insert(7, (sku_key("MUG", "wh1"), b'{"sku": "MUG", "bucket": 3}'))  # malformed
    await produce(settings, settings.topics.demand, records)
    service = OptimizerService(settings, pg_database, max_records=11)
    counters = await service.run_until_idle(2.0)
    assert counters.demand_in == len(records) - 1 and counters.dlq == 1

    async def tables() -> dict:
        conn = await asyncpg.connect(pg_database)
        try:
            history = {(r["sku"], r["location"], r["bucket_start"]): (r["quantity"],
                                                                     r["model_version"])
                       for r in await conn.fetch("SELECT * FROM demand_history")}
            scores = await conn.fetch("SELECT * FROM forecast_scores")
            pooled = {(r["segment"], r["bucket_start"]): (r["scored"], r["actual"])
                      for r in await conn.fetch("SELECT * FROM accuracy_buckets")}
            rolling = await conn.fetch("SELECT * FROM sku_accuracy ORDER BY sku, location")
            return {"history": history, "scores": scores, "pooled": pooled,
                    "rolling": rolling}
        finally:
            await conn.close()

    first = await tables()
    history = first["history"]
    assert len(history) == 30  # one row per SKU and bucket
    for (_, _, bucket), (quantity, version) in history.items():
        day = (bucket - DAY0).days
        # revised buckets hold the revision; the newest one was never revised
        assert quantity == (5.0 + day % 3 if day == 9 else 6.0 + day % 3)
        assert version == "moving_average-1"
    scores = first["scores"]
    assert len(scores) == 30
    # scored on the actual as first published: 5, 6 or 7 against quantiles 3 / 5 / 7
    assert {(s["actual"], s["covered"]) for s in scores} == {(5.0, 1), (6.0, 1), (7.0, 1)}
    assert first["pooled"][("*", DAY0)] == (3, 15.0)  # the fleet: 3 SKUs
    assert first["pooled"][("wh1", DAY0)] == (2, 10.0)
    assert [(r["sku"], r["location"], r["scored_buckets"]) for r in first["rolling"]] == [
        ("MUG", "wh1", 10), ("MUG", "wh2", 10), ("TEA", "wh1", 10)]

    # Everything again (a producer retry, a replayed worker batch), then a restart: no row
    # is added, no score counted twice.
    await produce(settings, settings.topics.demand, records)
    again = await OptimizerService(settings, pg_database).run_until_idle(2.0)
    assert again.demand_in == len(records) - 1
    second = await tables()
    assert second["history"] == first["history"]
    assert len(second["scores"]) == 30 and second["pooled"] == first["pooled"]


async def test_a_level_shift_raises_one_model_drift_alert(kafka_bootstrap, pg_database):
    settings = isolated_settings(kafka_bootstrap)
    await create_optimizer_topics(settings)
    skus = [(f"S{i}", "wh1") for i in range(20)]
    shift_day = 20
    records = []
    for day in range(30):
        for i, (sku, location) in enumerate(skus):
            quantity = 3.0 + (day + i) % 5 if day < shift_day else 15.0 + (day + i) % 5
            records.append(actual(sku, location, day, quantity))
    await produce(settings, settings.topics.demand, records)
    service = OptimizerService(settings, pg_database, max_records=50)
    service.drift_config = DriftConfig(report_buckets=7, drift_buckets=3, baseline_buckets=5)
    counters = await service.run_until_idle(2.0)
    assert counters.drift_alerts == 2  # the location's segment and the fleet, once each

    alerts = [AlertEvent.model_validate_json(r.value)
              for r in await read_expected(settings, settings.topics.alerts, 2)]
    assert sorted(a.location for a in alerts) == ["*", "wh1"]
    for alert in alerts:
        assert alert.kind == "model_drift" and alert.sku == "*"
        assert alert.details["model_version"] == "moving_average-1"
        # seen in the first complete bucket after the shift (day 29 is the newest, still open)
        assert alert.bucket == DAY0 + timedelta(days=shift_day)
    conn = await asyncpg.connect(pg_database)
    try:
        rows = await conn.fetch("SELECT segment, published_at, closed_bucket FROM drift_episodes")
        assert sorted(r["segment"] for r in rows) == ["*", "wh1"]
        assert all(r["published_at"] is not None and r["closed_bucket"] is None for r in rows)
        monitors = await conn.fetch("SELECT * FROM drift_monitors ORDER BY segment")
        assert [m["evaluated_through"] for m in monitors] == [DAY0 + timedelta(days=28)] * 2
        assert all(m["open_since"] == DAY0 + timedelta(days=shift_day) for m in monitors)
    finally:
        await conn.close()
    assert {(r.segment, r.drift_open) for r in service.accuracy} == {("*", True), ("wh1", True)}


async def test_the_dashboard_reads_demand_history_from_postgres(pg_database):
    """Every SKU's history from PostgreSQL, merged with the worker's newer closed buckets;
    memory alone when the database cannot be read."""
    from optimizer.actuals import ActualsBatch
    from optimizer.store import PlanStore
    from runtime.settings import Settings
    from streams.state import SkuState
    from streams.web import WorkerWeb, demand_source

    events = [DemandEvent.model_validate_json(value) for _, value in
              [actual("MUG", "wh1", day, 4.0) for day in range(5)]
              + [actual("TEA", "wh1", day, 2.0) for day in range(3)]]
    async with await PlanStore.connect(pg_database) as store:
        await store.migrate()
        await store.write_batch([], [], {}, "g", ActualsBatch(events, DAY0))
    day = 86_400
    mug = SkuState(sku="MUG", location="wh1", first_bucket=int(DAY0.timestamp()) // day,
                   watermark=int(DAY0.timestamp()) // day + 7)
    mug.demand = {mug.watermark - 2: 9.0, mug.watermark - 1: 3.0, mug.watermark: 1.0}
    table = {"MUG@wh1": mug}

    settings = Settings(kafka_bootstrap="unused:9092", database_url=pg_database)
    web = WorkerWeb(settings, table, demand=demand_source(settings))
    try:
        status, _, body = await web.handle("/api/sku/MUG%40wh1/", {})
        assert status == 200
        payload = json.loads(body)
        assert payload["demand_source"] == "postgresql"
        days = [(int(d["t"] - DAY0.timestamp()) // day, d["units"]) for d in payload["demand"]]
        # 0..4 from PostgreSQL, 5 and 6 closed in memory; 7 is open (not drawn)
        assert days == [(0, 4.0), (1, 4.0), (2, 4.0), (3, 4.0), (4, 4.0), (5, 9.0), (6, 3.0)]
        status, _, body = await web.handle("/api/sku/TEA%40wh1/", {})  # not on this worker
        assert status == 200 and len(json.loads(body)["demand"]) == 3
        status, _, body = await web.handle("/api/skus", {"q": "wh1"})
        assert json.loads(body)["skus"] == ["MUG@wh1", "TEA@wh1"]
    finally:
        await web.stop()

    broken = Settings(kafka_bootstrap="unused:9092",
                      database_url="postgresql://nobody@127.0.0.1:1/none")
    web = WorkerWeb(broken, table, demand=demand_source(broken))
    try:
        assert (await web.handle("/api/sku/TEA%40wh1/", {}))[0] == 404
        status, _, body = await web.handle("/api/sku/MUG%40wh1/", {})
        assert status == 200 and "demand_source" not in json.loads(body)
    finally:
        await web.stop()
