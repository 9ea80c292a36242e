"""Prometheus metrics for the stream worker, served on `/metrics`.

Nothing here touches the hot path per event. Per-topic in/out counts and consumer lag are read
at scrape time from Faust's own `Monitor` sensor (which counts every message anyway); the
worker's totals are read from its `StreamCounters`; per-batch facts (batch size, dead letters
by reason, restocks, alerts by kind) are observed once per batch; inference is timed once per
forecaster call. Each app gets its own `CollectorRegistry`, so several apps in one process
(tests) never collide.

Wiring: the batch engine gets its web server from `streams.web.start_worker_web` (which
calls `bind`); the Faust engine calls `metrics.install(app, counters)`; both wrap the
forecaster with `predict = metrics.instrument_predict(predict)` before `BatchProcessor(...)`.
The optimizer's metrics live in `optimizer.metrics`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as TallyCounter
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "CONTENT_TYPE_LATEST",
    "WorkerMetrics",
    "add_batch_observer",
]

log = logging.getLogger(__name__)

BatchObserver = Callable[[int, Any], None]

# Event counts per stream batch: take_max defaults to 2000.
BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000)
# Forecaster calls: ms for a few series on CPU up to seconds for thousands.
INFERENCE_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                             1.0, 2.5, 5.0, 10.0)
INFERENCE_BATCH_BUCKETS = (1, 8, 32, 64, 128, 256, 512, 1024, 4096, 16384)

# StreamCounters attribute -> (metric name, help). Read at scrape time; missing ones skipped.
_STREAM_TOTALS = {
    "events": ("shelfcast_stream_events_total", "Records the ingest agent consumed."),
    "accepted": ("shelfcast_stream_events_accepted_total", "Records applied to SKU state."),
    "duplicates": ("shelfcast_stream_events_duplicate_total",
                   "Records whose event_id was already counted (redeliveries)."),
    "dlq": ("shelfcast_stream_dead_letters_total", "Records sent to the dead-letter topic."),
    "forecasts": ("shelfcast_forecasts_total", "Forecast events published."),
    "restocks": ("shelfcast_restocks_total", "Restock events published."),
    "alerts": ("shelfcast_alerts_total", "Alert events published."),
    "batches": ("shelfcast_stream_batches_total", "Stream batches processed."),
}


class _PredictFn(Protocol):
    async def __call__(self, windows: np.ndarray, horizon: int) -> Any: ...


def add_batch_observer(counters: Any, observer: BatchObserver) -> None:
    """Call `observer(n_events, outputs)` after every `counters.add(n_events, outputs)`.

    The agent already hands each batch's outputs to its `StreamCounters`; chaining there
    keeps metrics and the dashboard out of the agent body. Observers never break the stream:
    an exception is logged and swallowed.
    """
    observers: list[BatchObserver] | None = getattr(counters, "_shelfcast_observers", None)
    if observers is None:
        observers = []
        original = counters.add

        def add(n_events: int, out: Any) -> None:
            original(n_events, out)
            for fn in observers:
                try:
                    fn(n_events, out)
                except Exception:  # an observer bug must not stop a partition
                    log.exception("batch observer %r failed", fn)

        counters.add = add
        counters._shelfcast_observers = observers
    observers.append(observer)


class _WorkerCollector:
    """Scrape-time view of the engine's monitor (Faust's or the batch engine's) and counters."""

    def __init__(self, app: Any, counters: Any, metrics: WorkerMetrics) -> None:
        self._app = app
        self._counters = counters
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        monitor = self._app.monitor
        events_in = CounterMetricFamily("shelfcast_events_in", "Records consumed, per topic.",
                                        labels=["topic"])
        for topic, n in sorted(dict(monitor.messages_received_by_topic).items()):
            events_in.add_metric([topic], n)
        yield events_in
        events_out = CounterMetricFamily("shelfcast_events_out", "Records produced, per topic.",
                                         labels=["topic"])
        for topic, n in sorted(dict(monitor.messages_sent_by_topic).items()):
            events_out.add_metric([topic], n)
        yield events_out
        yield from self._lag(monitor, getattr(self._app, "_consumer", None))

        for attr, (name, doc) in _STREAM_TOTALS.items():
            value = getattr(self._counters, attr, None)
            if isinstance(value, int | float):
                family = CounterMetricFamily(name.removesuffix("_total"), doc)
                family.add_metric([], value)
                yield family

        m = self._metrics
        dlq = CounterMetricFamily("shelfcast_dead_letters_by_reason",
                                  "Dead letters per error kind (ingest).", labels=["reason"])
        for reason, n in sorted(m.dead_letters_by_reason.items()):
            dlq.add_metric([reason], n)
        yield dlq
        alerts = CounterMetricFamily("shelfcast_alerts_by_kind", "Alerts raised per kind.",
                                     labels=["kind", "severity"])
        for (kind, severity), n in sorted(m.alerts_by_kind.items()):
            alerts.add_metric([kind, severity], n)
        yield alerts
        units = CounterMetricFamily("shelfcast_restock_units", "Units ordered by restocks.")
        units.add_metric([], m.restock_units)
        yield units
        series = CounterMetricFamily("shelfcast_inference_series",
                                     "Series (SKU windows) forecast; rate() = series/s.")
        series.add_metric([], m.inference_series)
        yield series
        info = GaugeMetricFamily("shelfcast_model_info", "The forecaster this worker runs.",
                                 labels=["model", "model_version"])
        info.add_metric([m.model, m.model_version], 1)
        yield info

    @staticmethod
    def _lag(monitor: Any, consumer: Any = None) -> Iterator[Metric]:
        lag = GaugeMetricFamily("shelfcast_consumer_lag",
                                "Records not yet committed, per assigned input partition.",
                                labels=["topic", "partition"])
        ends = dict(monitor.tp_end_offsets)
        if consumer is not None:  # batch engine: the fetcher's highwater marks, no request
            try:
                for tp in consumer.assignment():
                    high = consumer.highwater(tp)
                    if high is not None:
                        ends[tp] = high
            except Exception:  # the consumer is stopping or not started
                log.debug("no highwater marks for lag", exc_info=True)
        committed = dict(monitor.tp_committed_offsets)
        read = dict(monitor.tp_read_offsets)
        total = 0
        for tp, end in sorted(ends.items()):
            done = committed.get(tp)
            if done is None:
                last = read.get(tp)
                done = last + 1 if last is not None else None
            if done is None:
                continue
            value = max(0, end - done)
            total += value
            lag.add_metric([tp.topic, str(tp.partition)], value)
        yield lag
        summed = GaugeMetricFamily("shelfcast_consumer_lag_sum",
                                   "Sum of consumer lag over this worker's input partitions.")
        summed.add_metric([], total)
        yield summed


class WorkerMetrics:
    """The worker's metrics: a registry, batch/inference observers and the `/metrics` page."""

    def __init__(self, model_version: str, *, model: str = "",
                 registry: CollectorRegistry | None = None) -> None:
        self.model_version = model_version
        self.model = model
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.dead_letters_by_reason: TallyCounter[str] = TallyCounter()
        self.alerts_by_kind: TallyCounter[tuple[str, str]] = TallyCounter()
        self.restock_units = 0
        self.inference_series = 0
        self.batch_size = Histogram(
            "shelfcast_stream_batch_size", "Records per stream batch.",
            buckets=BATCH_SIZE_BUCKETS, registry=self.registry)
        self.inference_seconds = Histogram(
            "shelfcast_inference_seconds", "Wall time of one forecaster call (a micro-batch).",
            buckets=INFERENCE_SECONDS_BUCKETS, registry=self.registry)
        self.inference_batch = Histogram(
            "shelfcast_inference_batch_size", "Series per forecaster call.",
            buckets=INFERENCE_BATCH_BUCKETS, registry=self.registry)
        self._installed = False

    # --- observers ---------------------------------------------------------------------
    def instrument_predict(self, predict: _PredictFn) -> Any:
        """Wrap the forecaster call to time it and count its series."""

        async def timed(windows: np.ndarray, horizon: int, **context: Any) -> Any:
            t0 = time.perf_counter()
            result = await predict(windows, horizon, **context)
            self.inference_seconds.observe(time.perf_counter() - t0)
            n = int(windows.shape[0]) if getattr(windows, "ndim", 0) else 0
            self.inference_batch.observe(n)
            self.inference_series += n
            return result

        return timed

    def observe_batch(self, n_events: int, out: Any) -> None:
        """One stream batch: its size, dead letters by reason, restock units, alerts by kind."""
        self.batch_size.observe(n_events)
        for dl in getattr(out, "dead_letters", ()):
            self.dead_letters_by_reason[getattr(dl, "error_kind", "unknown")] += 1
        for restock in getattr(out, "restocks", ()):
            self.restock_units += int(getattr(restock, "quantity", 0))
        alert_rows = getattr(out, "alert_rows", None)
        alerts = (alert_rows if alert_rows is not None and out.alerts_only_as_rows
                  else getattr(out, "alerts", ()))  # rows: no models built to count them
        for alert in alerts:
            self.alerts_by_kind[(getattr(alert, "kind", "unknown"),
                                 getattr(alert, "severity", "unknown"))] += 1

    # --- serving -----------------------------------------------------------------------
    def bind(self, source: Any, counters: Any) -> None:
        """Read `source.monitor` (a Faust app or a `BatchEngine`) and `counters` at scrape time,
        and observe every batch the counters see. Idempotent."""
        if self._installed:
            return
        self._installed = True
        self.registry.register(_as_collector(_WorkerCollector(source, counters, self)))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        add_batch_observer(counters, self.observe_batch)

    def install(self, app: Any, counters: Any) -> None:
        """Faust engine: `bind`, then add `/metrics`, `/healthz` and `/readyz` to its web server."""
        self.bind(app, counters)
        app.shelfcast_metrics = self
        registry = self.registry

        @app.page("/metrics", name="shelfcast_metrics")
        async def metrics_page(view: Any, request: Any) -> Any:
            return view.bytes(generate_latest(registry),
                              headers={"Content-Type": CONTENT_TYPE_LATEST})

        @app.page("/healthz", name="shelfcast_healthz")
        async def healthz(view: Any, request: Any) -> Any:
            return view.json({"status": "ok", "model_version": self.model_version})

        @app.page("/readyz", name="shelfcast_readyz")
        async def readyz(view: Any, request: Any) -> Any:
            rebalancing = bool(getattr(app, "rebalancing", False))
            return view.json({"ready": not rebalancing}, status=503 if rebalancing else 200)

    def render(self) -> bytes:
        """The exposition text (what `/metrics` serves)."""
        return generate_latest(self.registry)


def _as_collector(obj: Any) -> Collector:
    return obj  # type: ignore[no-any-return]
