"""Prometheus metrics of the optimizer service: its counters, served on `/metrics`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from prometheus_client import (
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, Metric
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
