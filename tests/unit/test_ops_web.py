"""The worker web routes without a server: dashboard files, SKU search and payloads, health."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from runtime.settings import Settings
from schemas import ForecastEvent, RestockEvent
from streams.counters import StreamCounters
from streams.processor import BatchOutputs
from streams.web import WorkerWeb

DAY = 86_400
NOW = datetime(2024, 1, 10, tzinfo=UTC)


def body(reply):
    status, ctype, raw = reply
    return status, json.loads(raw) if ctype.startswith("application/json") else raw


def test_routes_serve_state_history_and_static_files():
    table = {"MUG@wh1": {"demand": {"19728": 3.0, "19729": 5.0, "19730": 1.0},
                         "watermark": 19730, "on_hand": 4, "backorders": 0,
                         "on_order": {"r1": 12}, "policy": {"supplier": "acme"}},
             "CUP@wh1": {"demand": {}, "on_hand": 1}}
    counters = StreamCounters()
    ready = {"ok": False}
    web = WorkerWeb(Settings(), lambda: table, counters=counters, ready=lambda: ready["ok"])
    bucket = datetime.fromtimestamp(19729 * DAY, UTC)
    counters.add(3, BatchOutputs(
        forecasts=[ForecastEvent(sku="MUG", location="wh1", issued_at=NOW, bucket=bucket,
                                 bucket_seconds=DAY, horizon=2, quantile_levels=[0.1, 0.5, 0.9],
                                 quantiles=[[1, 2, 3], [1, 2, 4]], cumulative=[[1, 2, 3],
                                 [2, 4, 7]], mean=[2, 2], model_version="m1")],
        restocks=[RestockEvent(restock_id="r1", sku="MUG", location="wh1", supplier="acme",
                               quantity=12, reorder_point=5, order_up_to=9,
                               inventory_position=4, on_hand=4, on_order=0, backorders=0,
                               service_level=0.95, lead_time_days=3, review_days=1,
                               unit_cost=1.0, reason="below_reorder_point",
                               model_version="m1", bucket=bucket, issued_at=NOW)]))

    assert body(web.route("/api/skus", {"q": "mu"})) == (200, {"skus": ["MUG@wh1"], "total": 1})
    status, data = body(web.route("/api/sku/MUG%40wh1/", {}))
    assert status == 200
    assert [d["units"] for d in data["demand"]] == [3.0, 5.0]  # the open bucket is left out
    assert data["forecast"]["start"] == 19730 * DAY and data["bands"][0]["median"] == 2
    assert data["stock"][0]["on_order"] == 12 and data["restocks"][0]["open"] is True
    status, over = body(web.route("/api/overview/", {}))
    assert over["skus"] == 2 and over["open_restocks"][0]["restock_id"] == "r1"
    assert body(web.route("/api/sku/NOPE@x/", {}))[0] == 404
    assert body(web.route("/readyz", {}))[0] == 503
    ready["ok"] = True
    assert body(web.route("/readyz", {}))[0] == 200
    status, ctype, html = web.route("/dashboard/", {})
    assert status == 200 and ctype.startswith("text/html") and b"dashboard.js" in html
    assert web.route("/dashboard/dashboard.js", {})[1].startswith("text/javascript")
    assert web.route("/dashboard/../../etc/passwd", {})[0] == 404
    assert web.route("/metrics", {})[0] == 404  # no metrics bound to this one


def test_a_degraded_worker_is_alive_but_not_ready():
    down = {"now": True}
    web = WorkerWeb(Settings(kafka_bootstrap="x:1"), {}, ready=lambda: True,
                    degraded=lambda: down["now"])
    assert body(web.route("/healthz", {})) == (200, {"status": "degraded"})
    assert body(web.route("/readyz", {})) == (503, {"ready": False, "degraded": True})
    down["now"] = False
    assert body(web.route("/readyz", {})) == (200, {"ready": True, "degraded": False})


async def test_a_port_in_use_is_said_to_be_in_use_not_blamed_on_kafka():
    import socket

    from runtime.errors import ConfigError
    from streams.web import WorkerWeb

    taken = socket.socket()
    taken.bind(("0.0.0.0", 0))
    taken.listen()
    port = taken.getsockname()[1]
    web = WorkerWeb(Settings(kafka_bootstrap="unused:9092"), lambda: None)
    try:
        with pytest.raises(ConfigError, match=f"port {port} is already in use"):
            await web.start(port)
    finally:
        taken.close()
