"""Prometheus metrics of the optimizer service: its counters, served on `/metrics`."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from prometheus_client import (
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["OptimizerCollector", "optimizer_registry", "serve_optimizer_metrics"]

log = logging.getLogger(__name__)


class OptimizerCollector:
    """The optimizer's `ServiceCounters` as Prometheus counters, read at scrape time."""

    HELP: ClassVar[dict[str, str]] = {
        "restocks_in": "Restock events consumed.",
        "plans_out": "Purchase plans published.",
        "plan_lines_written": "Plan rows written to PostgreSQL (new lines only).",
        "dlq": "Restock records refused to the dead-letter topic.",
        "batches": "Batches committed to PostgreSQL.",
        "db_retries": "PostgreSQL operations retried after a transient error.",
        "lines_cut": "Restocks cut (partly or to 0) by a supplier budget, capacity or MOQ.",
        "units_cut": "Units the cycle constraints cut from restocks.",
        "demand_in": "Demand actuals consumed (closed buckets, with revisions).",
        "drift_alerts": "model_drift alerts published.",
        "promotions_in": "Planned promotions recorded for retraining.",
        "promotions_refused": "Malformed planned promotions skipped (the worker dead-letters).",
        "holidays_in": "Holiday calendar entries recorded for retraining.",
        "holidays_refused": "Malformed holiday calendar entries skipped (the worker dead-letters).",
        "rewinds": "Batches refused because PostgreSQL lost acknowledged commits (re-read).",
    }
    # the drift monitors' rolling scores (forecasting/accuracy.py), per segment (a location,
    # `*` = the fleet) and model version; per SKU they are in PostgreSQL (view sku_accuracy),
    # not here: one series per SKU would swamp Prometheus
    GAUGES: ClassVar[dict[str, str]] = {
        "pinball_relative": "Rolling pinball loss / actual demand of the segment's forecasts.",
        "coverage": "Rolling share of actuals inside the forecasts' 80% interval (nominal 0.8).",
        "bias_relative": "Rolling (median forecast - actual) / actual; > 0 over-forecast.",
        "scored": "SKU-buckets in the rolling window.",
        "drift_open": "1 while a model_drift episode is open for the segment, else 0.",
    }

    def __init__(self, service: Any) -> None:
        self._service = service

    def collect(self) -> Iterable[Metric]:
        values: dict[str, int] = self._service.counters.as_dict()
        for name, value in values.items():
            family = CounterMetricFamily(f"shelfcast_optimizer_{name}",
                                         self.HELP.get(name, name.replace("_", " ")))
            family.add_metric([], value)
            yield family
        rows = list(getattr(self._service, "accuracy", []) or [])
        labels = ["segment", "model_version", "bucket_seconds"]
        families = {name: GaugeMetricFamily(f"shelfcast_forecast_{name}", text, labels=labels)
                    for name, text in self.GAUGES.items()}
        for row in rows:
            key = [row.segment, row.model_version, str(row.bucket_seconds)]
            s = row.scores
            for name, value in (("pinball_relative", s.pinball_relative),
                                ("coverage", s.coverage), ("bias_relative", s.bias_relative),
                                ("scored", float(s.scored)),
                                ("drift_open", 1.0 if row.drift_open else 0.0)):
                if math.isfinite(value):
                    families[name].add_metric(key, value)
        yield from families.values()


def optimizer_registry(service: Any) -> CollectorRegistry:
    """A registry holding the optimizer's counters and this process's CPU/memory."""
    registry = CollectorRegistry(auto_describe=True)
    collector: Collector = OptimizerCollector(service)  # type: ignore[assignment]
    registry.register(collector)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def serve_optimizer_metrics(service: Any, port: int, addr: str = "0.0.0.0") -> Callable[[], None]:
    """Serve the optimizer's `/metrics` on `addr:port` (a daemon thread); returns a stopper."""
    server, thread = start_http_server(port, addr=addr, registry=optimizer_registry(service))

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    log.info("optimizer metrics on http://%s:%d/metrics", addr, port)
    return stop
