"""Run one stream worker process: create topics, build the forecaster and the engine, serve.

`SHELFCAST_ENGINE` picks the engine: `batch` (the default; `streams.engine`) or `faust`
(`streams.app`). Both run the same pure `BatchProcessor` on the same topics and group.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from typing import TYPE_CHECKING

from runtime.logs import configure_logging
from runtime.settings import Settings
from streams.counters import StreamCounters
from streams.forecaster_setup import local_predict, model_source, served_forecaster
from streams.metrics import WorkerMetrics
from streams.processor import BatchProcessor, ProcessorConfig
from streams.topics import ensure_topics

if TYPE_CHECKING:
    import faust

__all__ = ["build_app", "local_predict", "run_batch_worker", "run_worker"]

log = logging.getLogger(__name__)

REPORT_INTERVAL_S = 5.0


def build_app(settings: Settings) -> faust.App:
    from streams.app import create_app

    forecaster, _ = model_source(settings)
    return create_app(settings, local_predict(forecaster), forecaster.model_version)


async def run_batch_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """The batch engine until `stop` is set (or SIGTERM/SIGINT when none is given)."""

    def rolled_in(version: str) -> None:
        processor.model_version = version  # stamped on every forecast from now on

    async with served_forecaster(settings, rolled_in) as (forecaster, predict):
        metrics = WorkerMetrics(forecaster.model_version, model=settings.model)
        processor = BatchProcessor(ProcessorConfig.from_settings(settings),
                                   metrics.instrument_predict(predict), forecaster.model_version)
        await _serve(settings, processor, metrics, stop)


async def _serve(settings: Settings, processor: BatchProcessor, metrics: WorkerMetrics,
                 stop: asyncio.Event | None) -> None:
    from streams.engine import BatchEngine
    from streams.web import start_worker_web

    counters = StreamCounters()
    engine = BatchEngine(settings, processor, counters)
    web = await start_worker_web(settings, engine, counters, metrics)  # None without WEB_PORT
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

    async def report() -> None:
        while True:
            await asyncio.sleep(REPORT_INTERVAL_S)
            log.info("shelfcast: %s", counters.summary())

    reporter = asyncio.create_task(report())
    try:
        await engine.run(stop)
    finally:
        reporter.cancel()
        if web is not None:
            await web.stop()
        log.info("shelfcast: stopped; %s", counters.summary())


def tune_gc() -> None:
    """Fewer cyclic-GC passes: the state store is many long-lived containers, and with the
    default thresholds the collector rescans them every few hundred allocations (py-spy showed
    it as a third of the batch time, charged to whatever line allocated)."""
    gc.collect()
    gc.freeze()  # what exists now (modules, settings) is never garbage
    gc.set_threshold(50_000, 20, 100)


def run_worker(settings: Settings, *, loglevel: str = "info") -> None:
    """Blocks until the worker is stopped (SIGTERM/SIGINT)."""
    asyncio.run(ensure_topics(settings))
    if settings.engine == "batch":
        configure_logging(settings, level=loglevel)
        tune_gc()
        asyncio.run(run_batch_worker(settings))
        return
    import faust

    asyncio.set_event_loop(asyncio.new_event_loop())
    app = build_app(settings)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    worker = faust.Worker(app, loglevel=loglevel, logfile=None, quiet=True)
    worker.execute_from_commandline()
