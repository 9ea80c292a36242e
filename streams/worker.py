"""Run one stream worker process: create topics, build the forecaster and the engine, serve.

`SHELFCAST_ENGINE` picks the engine: `batch` (the default; `streams.engine`) or `faust`
(`streams.app`). Both run the same pure `BatchProcessor` on the same topics and group.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from runtime.logs import configure_logging
from runtime.settings import Settings
from streams.calendar_feed import CalendarFeed
from streams.counters import StreamCounters
from streams.forecaster_setup import (
    DeferredPredict,
    local_predict,
    model_source,
    served_forecaster,
    warn_without_holidays,
)
from streams.holiday_calendar import HolidayCalendar
from streams.metrics import WorkerMetrics
from streams.processor import BatchProcessor, ProcessorConfig
from streams.topics import ensure_topics

if TYPE_CHECKING:
    import faust

__all__ = ["build_app", "local_predict", "run_batch_worker", "run_worker"]

log = logging.getLogger(__name__)

REPORT_INTERVAL_S = 5.0


def build_app(settings: Settings, *,
              calendar_feed: Callable[[HolidayCalendar], AbstractAsyncContextManager[Any]]
              | None = None) -> faust.App:
    """The Faust engine's app, serving through `served_forecaster` like the batch engine:
    the inferencer (micro-batched, incremental, durable state) and model roll-in. The model
    is loaded now (a bad configuration fails before Faust starts); the serving path is
    entered on the worker's event loop by an app task, after the holiday calendar is read
    (`calendar_feed(calendar)`: a `CalendarFeed` by default), and the agent's forecasts wait
    for it."""
    from streams.app import create_app

    source = model_source(settings)
    forecaster = source[0]
    metrics = WorkerMetrics(forecaster.model_version, model=settings.model)
    deferred = DeferredPredict()
    calendar = HolidayCalendar()
    app = create_app(settings, deferred, forecaster.model_version, metrics, calendar=calendar)

    def rolled_in(version: str) -> None:  # for reports: each forecast carries its own version
        metrics.model_version = version

    @app.task  # type: ignore[untyped-decorator]
    async def serve() -> None:
        # forecasts wait for `deferred`: for the calendar read up to its end, and the model
        feed = (calendar_feed(calendar) if calendar_feed is not None
                else CalendarFeed(settings, calendar))
        async with (feed,
                    served_forecaster(settings, rolled_in, source=source) as (_, predict)):
            warn_without_holidays(forecaster, len(calendar))
            deferred.serve(predict)
            await asyncio.Event().wait()  # until the app stops (it cancels its tasks)

    return app


async def run_batch_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """The batch engine until `stop` is set (or SIGTERM/SIGINT when none is given)."""
    metrics: WorkerMetrics | None = None

    def rolled_in(version: str) -> None:  # for reports: each forecast carries its own version
        if metrics is not None:
            metrics.model_version = version

    # on the loop: the engine's partitions are concurrent tasks whose requests share a pass
    # the holiday calendar read up to its end before the first forecast (streams.calendar_feed)
    async with (CalendarFeed(settings) as feed,
                served_forecaster(settings, rolled_in, on_loop=True) as (forecaster, predict)):
        warn_without_holidays(forecaster, len(feed.calendar))
        metrics = WorkerMetrics(forecaster.model_version, model=settings.model)
        processor = BatchProcessor(ProcessorConfig.from_settings(settings),
                                   metrics.instrument_predict(predict), forecaster.model_version,
                                   calendar=feed.calendar)
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
