"""The worker web routes without a server: dashboard files, SKU search and payloads, health."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from runtime.settings import Settings
from schemas import ForecastEvent, RestockEvent
from streams.counters import StreamCounters
from streams.processor import BatchOutputs
from streams.store import StateStore
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


def test_a_key_on_two_partitions_shows_its_furthest_state_and_both_partitions():
    store = StateStore(4)
    store.partition(3)["TEE@berlin"] = {"demand": {}, "watermark": 19730, "on_hand": 7}
    store.partition(0)["TEE@berlin"] = {"demand": {}, "watermark": 19700, "on_hand": 1}
    store.partition(1)["MUG@wh1"] = {"demand": {}, "watermark": 19730, "on_hand": 2}
    web = WorkerWeb(Settings(), lambda: store)
    status, data = body(web.route("/api/sku/TEE%40berlin/", {}))
    assert status == 200 and data["partitions"] == [0, 3] and data["state"]["on_hand"] == 7
    assert body(web.route("/api/sku/MUG%40wh1/", {}))[1]["partitions"] == [1]
    assert body(web.route("/api/overview/", {}))[1]["skus"] == 2
    assert body(web.route("/api/skus", {"q": ""}))[1]["skus"] == ["MUG@wh1", "TEE@berlin"]


def test_accuracy_payload_rolls_scores_per_version_and_marks_promotions():
    """Rolling sums over the window, pooled across versions as the drift monitor pools a
    segment; each promoted version marked at its first scored bucket."""
    from types import SimpleNamespace

    from optimizer.actuals import ScoredBucket
    from streams.web import accuracy_payload

    day = 86_400

    def at(d: int) -> datetime:
        return datetime.fromtimestamp(d * day, UTC)

    rows = [ScoredBucket(at(d), "old" if d < 4 else "new", 2, 1.0 if d < 4 else 0.5, 10.0,
                         1.0 if d < 4 else 2.0) for d in range(6)]
    rows.insert(4, ScoredBucket(at(4), "old", 1, 3.0, 5.0, 0.0))  # a SKU still on the old one
    decisions = [  # newest first, as list_model_versions gives them
        SimpleNamespace(version="newer", promoted=True, champion_version="new", reason="r3",
                        decided_at=at(9)),
        SimpleNamespace(version="kept", promoted=False, champion_version="new", reason="r2",
                        decided_at=at(8)),
        SimpleNamespace(version="new", promoted=True, champion_version="old", reason="r1",
                        decided_at=at(7)),
    ]
    out = accuracy_payload(rows, decisions, window=2)
    points = out["points"]
    assert [p["t"] for p in points] == [d * day for d in range(6)]
    assert points[0] == {"t": 0, "scored": 2, "version": "old", "pinball_relative": 0.1,
                         "coverage_80": 0.5}
    # day 4: days 3 and 4 pooled: (1 + 0.5 + 3) / (10 + 10 + 5); the bucket mostly "new"
    assert points[4]["pinball_relative"] == pytest.approx(4.5 / 25, abs=1e-5)
    assert points[4]["scored"] == 5 and points[4]["version"] == "new"
    assert points[4]["coverage_80"] == pytest.approx(3 / 5)
    assert out["versions"] == [
        {"version": "old", "first": 0, "last": 4 * day, "scored": 9},
        {"version": "new", "first": 4 * day, "last": 5 * day, "scored": 4}]
    assert [(m["version"], m["t"]) for m in out["promotions"]] == [("new", 4 * day),
                                                                   ("newer", None)]


async def test_accuracy_without_a_database_says_so():
    web = WorkerWeb(Settings(kafka_bootstrap="unused:9092"), StateStore(1))
    status, _, body = await web.aroute("/api/accuracy/", {"sku": "MUG@wh1"})
    assert status == 200
    payload = json.loads(body)
    assert payload["database"] is False and payload["points"] == []
    assert payload["scope"] == "sku" and payload["key"] == "MUG@wh1"


def test_history_from_forecast_rows_equals_history_from_their_models_and_builds_none():
    import numpy as np

    from streams.outputs import AlertRow, ForecastRows
    from streams.web import SkuHistory

    rng = np.random.default_rng(3)
    daily = np.sort(rng.gamma(2.0, 3.0, size=(3, 4, 5)), axis=2).round(4)
    rows = ForecastRows(skus=["A", "B", "A"], locations=["wh1", "wh1", "wh2"],
                        last_closed=[19_000, 19_001, 19_002], bucket_seconds=DAY,
                        issued_at=NOW, levels=[0.05, 0.25, 0.5, 0.75, 0.95], daily=daily,
                        cumulative=np.cumsum(daily, axis=1), mean=daily[:, :, 2],
                        model_version="m1")
    alert = AlertRow(alert_id="a1", sku="A", location="wh1", kind="stockout_risk",
                     severity="warning", message="m", details={}, raised_at=NOW)
    table = {"A@wh1": {"on_hand": 3, "on_order": {"r": 2}, "backorders": 1}}
    from_rows, from_models = SkuHistory(table), SkuHistory(table)
    out = BatchOutputs(forecast_rows=[rows], alert_rows=[alert])
    from_rows.observe_batch(3, out)
    assert out.forecasts_only_as_rows and out.alerts_only_as_rows  # nothing was built
    from_models.observe_batch(3, BatchOutputs(forecasts=rows.models(), alerts=[alert.model()]))
    assert from_rows.tracks.keys() == from_models.tracks.keys()
    for key, track in from_rows.tracks.items():
        other = from_models.tracks[key]
        forecast = track.forecast.as_dict()  # type: ignore[union-attr]
        assert forecast == other.forecast
        assert list(track.bands) == list(other.bands)
        assert list(track.stock) == list(other.stock) and list(track.alerts) == list(other.alerts)
