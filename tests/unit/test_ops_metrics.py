"""Metrics without Kafka: batch observers, inference timing, the optimizer's /metrics."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from types import SimpleNamespace

import numpy as np
from faust.types import TP
from prometheus_client.parser import text_string_to_metric_families

from optimizer.metrics import serve_optimizer_metrics
from optimizer.service import ServiceCounters
from schemas import AlertEvent, DeadLetter
from streams.counters import StreamCounters
from streams.metrics import WorkerMetrics, add_batch_observer
from streams.processor import BatchOutputs

NOW = datetime(2024, 1, 1, tzinfo=UTC)


def values(text: bytes | str) -> dict[tuple[str, frozenset], float]:
    text = text.decode() if isinstance(text, bytes) else text
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


class FakeApp:
    """Enough of a Faust app: a monitor with counters, and `page` that records routes."""

    def __init__(self) -> None:
        tp = TP(topic="shop.orders", partition=0)
        self.monitor = SimpleNamespace(
            messages_received_by_topic=Counter({"shop.orders": 7, "shop.stock": 2}),
            messages_sent_by_topic=Counter({"shelfcast.dlq": 1}),
            tp_end_offsets={tp: 10}, tp_committed_offsets={tp: 4}, tp_read_offsets={tp: 8})
        self.pages: dict[str, object] = {}

    def page(self, path: str, name: str | None = None):
        def deco(fun):
            self.pages[path] = fun
            return fun
        return deco


def dead(kind: str) -> DeadLetter:
    return DeadLetter(source_topic="shop.orders", partition=0, offset=1, key=None, error="x",
                      error_kind=kind, raw_payload_b64="", received_at=NOW)


def alert(kind: str) -> AlertEvent:
    return AlertEvent(alert_id="a", sku="S", location="L", kind=kind, severity="warning",
                      message="m", raised_at=NOW)


def test_worker_metrics_read_counters_monitor_and_batches():
    app, counters = FakeApp(), StreamCounters()
    metrics = WorkerMetrics("ma-v1", model="moving_average")
    metrics.install(app, counters)
    assert {"/metrics", "/healthz", "/readyz"} <= set(app.pages)

    out = BatchOutputs(dead_letters=[dead("invalid_json"), dead("late"), dead("late")],
                       alerts=[alert("stockout_risk")], accepted=4, duplicates=1)
    counters.add(8, out)  # the agent's call: observers ride on it
    assert counters.events == 8 and counters.dlq == 3

    async def predict(windows: np.ndarray, horizon: int) -> str:
        return "forecast"

    timed = metrics.instrument_predict(predict)
    assert asyncio.run(timed(np.zeros((5, 56)), 14)) == "forecast"

    v = values(metrics.render())
    assert v[("shelfcast_events_in_total", frozenset({("topic", "shop.orders")}))] == 7
    assert v[("shelfcast_events_out_total", frozenset({("topic", "shelfcast.dlq")}))] == 1
    assert v[("shelfcast_dead_letters_by_reason_total", frozenset({("reason", "late")}))] == 2
    assert v[("shelfcast_stream_events_duplicate_total", frozenset())] == 1
    assert v[("shelfcast_stream_batch_size_sum", frozenset())] == 8
    assert v[("shelfcast_inference_series_total", frozenset())] == 5
    assert v[("shelfcast_inference_seconds_count", frozenset())] == 1
    assert v[("shelfcast_consumer_lag", frozenset({("topic", "shop.orders"),
                                                   ("partition", "0")}))] == 6
    assert v[("shelfcast_model_info", frozenset({("model", "moving_average"),
                                                 ("model_version", "ma-v1")}))] == 1
    assert v[("shelfcast_alerts_by_kind_total", frozenset({("kind", "stockout_risk"),
                                                           ("severity", "warning")}))] == 1


def test_a_failing_observer_never_breaks_the_batch():
    counters = StreamCounters()

    def broken(n: int, out: object) -> None:
        raise RuntimeError("bug")

    seen: list[int] = []
    add_batch_observer(counters, broken)
    add_batch_observer(counters, lambda n, out: seen.append(n))
    counters.add(3, BatchOutputs())
    assert counters.events == 3 and seen == [3]


def test_optimizer_metrics_over_http():
    service = SimpleNamespace(counters=ServiceCounters(restocks_in=4, plan_lines_written=3,
                                                       plans_out=2, lines_cut=2, units_cut=30))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stop = serve_optimizer_metrics(service, port, addr="127.0.0.1")
    try:
        service.counters.plan_lines_written += 1  # read at scrape time
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            v = values(resp.read())
    finally:
        stop()
    assert v[("shelfcast_optimizer_plan_lines_written_total", frozenset())] == 4
    assert v[("shelfcast_optimizer_restocks_in_total", frozenset())] == 4
    assert v[("shelfcast_optimizer_db_retries_total", frozenset())] == 0
    assert v[("shelfcast_optimizer_lines_cut_total", frozenset())] == 2
    assert v[("shelfcast_optimizer_units_cut_total", frozenset())] == 30
