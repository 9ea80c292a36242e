"""The dashboard of a running worker (real Kafka and PostgreSQL), its JSON API and headless
Chromium.

A worker process with `SHELFCAST_WEB_PORT` runs a few weeks of orders and stock snapshots for
three SKUs, and the optimizer scores its forecasts against the demand that followed; the API
must then serve demand, forecast bands, stock, restocks and accuracy over time, and Chromium
(Debian's `chromium`; skipped when absent) must load the page and render the SKU chart and
the accuracy charts (the fleet's and the SKU's). The screenshot goes to
`artifacts/dashboard.png` (kept by CI; docs/dashboard.png is a copy); the accuracy panel with
a promotion is tests/integration/test_monitoring_loop.py's (docs/dashboard-accuracy.png).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from optimizer.service import OptimizerService
from runtime.settings import Settings
from schemas import sku_key
from shelfcast.worker_process import WorkerProcess
from streams.topics import ensure_topics
from tests.support.browser import chromium, free_port, get, run_chromium, screenshot

T0 = datetime(2011, 3, 1, 9, 0, tzinfo=UTC)
DAYS = 40
SKUS = {"MUG": 6.0, "TEAPOT": 2.0, "CANDLE": 11.0}  # mean units per day


def shop_days(settings: Settings) -> list[list[tuple[str, str, dict]]]:
    """Per day, every SKU's events: weekly-seasonal demand, a stock count now and then."""
    t = settings.topics
    days: list[list[tuple[str, str, dict]]] = [[] for _ in range(DAYS)]
    for sku, mean in SKUS.items():
        key = sku_key(sku, "wh1")
        out = days[0]
        out.append((t.catalog, key, {
            "sku": sku, "location": "wh1", "lead_time_days": 3, "review_days": 1,
            "service_level": 0.95, "case_pack": 6, "moq": 12, "unit_cost": 2.5,
            "supplier": "acme"}))
        on_hand = int(mean * 6)
        for d in range(DAYS):
            out = days[d]
            day = T0 + timedelta(days=d)
            if d % 9 == 0:  # a physical count now and then; orders deplete it in between
                on_hand = max(on_hand, int(mean * 4)) if d else on_hand
                out.append((t.stock, key, {
                    "event_id": f"snap-{sku}-{d}", "type": "snapshot", "sku": sku,
                    "location": "wh1", "on_hand": on_hand, "occurred_at": day.isoformat()}))
            weekly = 1.0 + 0.5 * math.sin(2 * math.pi * d / 7)
            qty = max(1, round(mean * weekly * (1.6 if d == 30 else 1.0)))
            on_hand = max(0, on_hand - qty)
            for part in range(2):
                out.append((t.orders, key, {
                    "event_id": f"o-{sku}-{d}-{part}", "type": "placed", "sku": sku,
                    "location": "wh1", "quantity": max(1, qty // 2 + part * (qty % 2)),
                    "occurred_at": (day + timedelta(hours=2 + 5 * part)).isoformat()}))
    return days


@pytest_asyncio.fixture(loop_scope="session")
async def running_worker(kafka_bootstrap: str, pg_database: str, fresh_topic_prefix: str,
                         tmp_path: Path) -> AsyncIterator[int]:
    port = free_port()
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"{fresh_topic_prefix}.",
                        shop_topic_prefix=f"{fresh_topic_prefix}.shop.",
                        app_id=f"{fresh_topic_prefix}-app", topic_partitions=2, web_port=port,
                        window_buckets=28, model="moving_average", database_url=pg_database)
    await ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    stop = asyncio.Event()
    optimizer = asyncio.create_task(OptimizerService(settings, pg_database).run(stop))
    try:
        await asyncio.to_thread(worker.wait_ready, 120)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
        await producer.start()
        try:
            # A day at a time, as a live shop would: each day closes a bucket in its own batch,
            # so the history gets one forecast band and stock sample per day.
            for day in shop_days(settings):
                sends = [await producer.send(topic, json.dumps(v).encode(), key=k.encode())
                         for topic, k, v in day]
                await asyncio.gather(*sends)
                await asyncio.sleep(0.25)
        finally:
            await producer.stop()
        deadline = time.monotonic() + 90
        while True:
            try:
                data = await asyncio.to_thread(get, port, "/api/sku/MUG@wh1/")
                scored = (await asyncio.to_thread(get, port, "/api/accuracy/?sku=MUG@wh1")
                          )["points"]
                if (data["forecast"] and data["restocks"] and len(scored) >= DAYS - 3
                        and len(data["demand"]) >= 25 and len(data["stock"]) >= 20):
                    break
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    raise
            if time.monotonic() > deadline:
                pytest.fail(f"dashboard data incomplete; worker log:\n{worker.log_tail()}")
            await asyncio.sleep(0.5)
        yield port
    finally:
        stop.set()
        await optimizer
        worker.stop()


@pytest.mark.timeout(240)
async def test_dashboard_api_serves_a_running_pipeline(running_worker: int):
    port = running_worker
    found = await asyncio.to_thread(get, port, "/api/skus?q=mu")
    assert found["skus"] == ["MUG@wh1"]
    everything = await asyncio.to_thread(get, port, "/api/skus")
    assert set(everything["skus"]) == {sku_key(s, "wh1") for s in SKUS}
    data = await asyncio.to_thread(get, port, "/api/sku/MUG@wh1/")
    fc = data["forecast"]
    assert len(fc["quantiles"]) == 14 and len(fc["levels"]) == len(fc["quantiles"][0])
    assert all(q[0] <= q[-1] for q in fc["quantiles"])  # bands are ordered
    assert data["bands"] and data["stock"] and data["restocks"]
    assert data["state"]["policy"]["supplier"] == "acme"
    assert all(r["quantity"] % 6 == 0 and r["quantity"] >= 12 for r in data["restocks"])
    # accuracy: every closed day after the first scored, rolling over a week, one version
    for path in ("/api/accuracy/?sku=MUG@wh1", "/api/accuracy/"):
        acc = await asyncio.to_thread(get, port, path)
        assert acc["database"] is True and acc["window_buckets"] == 7
        assert len(acc["points"]) >= DAYS - 3
        assert all(0 < p["pinball_relative"] < 1 and 0 <= p["coverage_80"] <= 1
                   for p in acc["points"])
        assert [v["version"] for v in acc["versions"]] == [data["forecast"]["model_version"]]
        assert acc["promotions"] == []  # the moving average is not retrained
    assert acc["key"] == "*" and acc["points"][-1]["scored"] == 7 * len(SKUS)
    overview = await asyncio.to_thread(get, port, "/api/overview/")
    assert overview["skus"] == 3 and overview["restocks"] >= 1
    with pytest.raises(urllib.error.HTTPError) as missing:
        await asyncio.to_thread(get, port, "/api/sku/NOPE@wh9/")
    assert missing.value.code == 404
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/dashboard/", timeout=5) as resp:
        page = resp.read().decode()
    assert resp.headers["Content-Type"].startswith("text/html")
    assert "/dashboard/dashboard.js" in page and "http" not in page.split("<body>")[1]


@pytest.mark.timeout(300)
@pytest.mark.skipif(chromium() is None, reason="chromium not installed (apt-get install chromium)")
async def test_dashboard_renders_in_headless_chromium(running_worker: int, tmp_path: Path):
    binary = chromium()
    assert binary is not None
    url = f"http://127.0.0.1:{running_worker}/dashboard/?sku=MUG%40wh1"
    dom = await asyncio.to_thread(run_chromium, binary, tmp_path / "p1", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert 'data-loaded="true"' in html, html[:2000]
    assert re.search(r'id="chart"[^>]*data-rendered="true"', html), html[:4000]
    assert html.count('class="series-demand"') >= 25
    assert 'class="series-forecast-outer"' in html and 'class="series-on-hand"' in html
    assert html.count('class="series-restock"') >= 1
    assert "MUG@wh1" in html and ("status-open" in html or "received" in html)
    assert re.search(r'id="models"[^>]*data-loaded="true"', html)  # model versions panel
    # the accuracy panel: the fleet's chart and the SKU's, each with its lines
    assert re.search(r'id="accuracy"[^>]*data-loaded="true"', html)
    for chart in ("accuracy-fleet", "accuracy-sku"):
        assert re.search(rf'id="{chart}"[^>]*data-rendered="true"', html), html[:4000]
    assert html.count('class="accuracy-pinball"') >= 2
    assert html.count('class="accuracy-coverage"') == 2
    assert "SKU MUG@wh1" in html

    shot = await asyncio.to_thread(screenshot, binary, tmp_path / "p2", "dashboard.png", url,
                                   1280, 1000)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
