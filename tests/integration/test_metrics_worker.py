"""`/metrics` of a running stream worker process (real Kafka): the series operators graph.

A worker runs as its own process with `SHELFCAST_WEB_PORT` set; the test publishes a few
days of orders (plus a malformed record and a redelivery), waits for the restock, then scrapes
the worker the way Prometheus would and checks the series carry non-zero values.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from runtime.settings import Settings
from shelfcast.worker_process import WorkerProcess
from streams.topics import ensure_topics

T0 = datetime(2011, 3, 7, 10, 0, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """name -> {sorted label items -> value} for every sample on /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def total(samples: dict, name: str, **labels: str) -> float:
    return sum(v for k, v in samples.get(name, {}).items()
               if all(dict(k).get(lk) == lv for lk, lv in labels.items()))


def shop_events(settings: Settings) -> list[tuple[str, bytes]]:
    t = settings.topics
    events = [
        (t.catalog, {"sku": "MUG", "location": "wh1", "lead_time_days": 2, "review_days": 1,
                     "service_level": 0.95, "case_pack": 6, "moq": 12, "unit_cost": 1.5,
                     "supplier": "acme"}),
        (t.stock, {"event_id": "snap-1", "type": "snapshot", "sku": "MUG", "location": "wh1",
                   "on_hand": 10, "occurred_at": (T0 - timedelta(hours=2)).isoformat()}),
    ]
    for d in range(8):
        events.append((t.orders, {"event_id": f"ord-{d}", "type": "placed", "sku": "MUG",
                                  "location": "wh1", "quantity": 5,
                                  "occurred_at": (T0 + timedelta(days=d)).isoformat()}))
    out = [(topic, json.dumps(v).encode()) for topic, v in events]
    out.insert(4, (t.orders, b'{"event_id": "broken", "quantity": '))  # -> DLQ
    out.insert(5, out[3])  # a redelivered order
    return out


@pytest.mark.timeout(240)
async def test_worker_serves_metrics_with_live_values(
    kafka_bootstrap: str, fresh_topic_prefix: str, tmp_path: Path
):
    port = free_port()
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"{fresh_topic_prefix}.",
                        shop_topic_prefix=f"{fresh_topic_prefix}.shop.",
                        app_id=f"{fresh_topic_prefix}-app", topic_partitions=2, web_port=port,
                        model="moving_average")  # about metrics, not the model
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        await asyncio.to_thread(worker.wait_ready, 120)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for topic, value in shop_events(settings):
                await producer.send_and_wait(topic, value, key=b"MUG@wh1")
        finally:
            await producer.stop()

        t = settings.topics
        deadline = time.monotonic() + 90
        samples: dict = {}
        while time.monotonic() < deadline:
            samples = await asyncio.to_thread(scrape, port)
            if (total(samples, "shelfcast_restocks_total") > 0
                    and total(samples, "shelfcast_events_in_total", topic=t.orders) >= 10):
                break
            await asyncio.sleep(0.5)
        else:
            pytest.fail(f"no restock seen on /metrics; worker log:\n{worker.log_tail()}")
    finally:
        worker.stop()

    assert total(samples, "shelfcast_events_in_total", topic=t.orders) >= 10
    assert total(samples, "shelfcast_events_in_total", topic=t.stock) >= 1
    assert total(samples, "shelfcast_events_in_total", topic=t.catalog) >= 1
    assert total(samples, "shelfcast_events_out_total", topic=t.forecasts) > 0
    assert total(samples, "shelfcast_events_out_total", topic=t.restock) > 0
    assert total(samples, "shelfcast_events_out_total", topic=t.dlq) >= 1
    assert total(samples, "shelfcast_dead_letters_by_reason_total") >= 1
    assert total(samples, "shelfcast_stream_events_duplicate_total") >= 1
    assert total(samples, "shelfcast_stream_batch_size_count") > 0
    assert total(samples, "shelfcast_stream_batch_size_sum") >= 12
    assert total(samples, "shelfcast_inference_seconds_count") > 0
    assert total(samples, "shelfcast_inference_seconds_sum") > 0
    assert total(samples, "shelfcast_inference_series_total") > 0
    assert total(samples, "shelfcast_forecasts_total") > 0
    assert total(samples, "shelfcast_restock_units_total") >= 12  # at least the MOQ
    assert total(samples, "shelfcast_model_info") == 1
    assert "shelfcast_consumer_lag" in samples  # per partition; 0 once caught up
    assert total(samples, "process_cpu_seconds_total") > 0
