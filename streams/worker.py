"""Run one stream worker process: create topics, build the forecaster and the engine, serve.

`SHELFCAST_ENGINE` picks the engine: `batch` (the default; `streams.engine`) or `faust`
(`streams.app`). Both run the same pure `BatchProcessor` on the same topics and group.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from runtime.logs import configure_logging
from runtime.settings import Settings
from streams.calendar_feed import CalendarFeed
from streams.counters import StreamCounters
from streams.forecaster_setup import (
    DeferredPredict,
    check_servable,
    local_predict,
    model_source,
    provisional_version,
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
    """The batch engine until `stop` is set (or SIGTERM/SIGINT when none is given).

    Start-up does three things at once: the model loads on a thread (its compiled trees
    read or compiled), the holiday calendar is read up to its end, and the engine joins its
    group and recovers its partitions' state from the changelog (the largest part of a
    recovered worker's start). Forecasts wait for the model and the calendar
    (`DeferredPredict`); the engine says ready once its state is recovered and they serve.
    One after the other, a worker taking over 50k SKUs spent ~1.5 s more before serving
    (benchmarks/README.md "Recovery time"). A model that cannot be served by configuration
    fails before connecting (`check_servable`); one whose artifact does not load stops the
    worker with that error once the engine has left its group.
    """
    check_servable(settings)
    loading = asyncio.create_task(asyncio.to_thread(model_source, settings), name="model-load")
    loading.add_done_callback(lambda t: t.cancelled() or t.exception())  # raised where awaited
    deferred = DeferredPredict()
    calendar = HolidayCalendar()
    metrics = WorkerMetrics(provisional_version(settings), model=settings.model)
    processor = BatchProcessor(ProcessorConfig.from_settings(settings), deferred,
                               metrics.model_version, calendar=calendar)

    def rolled_in(version: str) -> None:  # for reports: each forecast carries its own version
        metrics.model_version = processor.model_version = version

    async def serve_model() -> None:
        # on the loop: the engine's partitions are concurrent tasks whose requests share a pass
        try:
            async with CalendarFeed(settings, calendar) as feed:
                source = await loading
                async with served_forecaster(settings, rolled_in, source=source,
                                             on_loop=True) as (forecaster, predict):
                    warn_without_holidays(forecaster, len(feed.calendar))
                    rolled_in(forecaster.model_version)
                    deferred.serve(metrics.instrument_predict(predict))
                    await asyncio.Event().wait()  # until the engine stops (it cancels this)
        except Exception as exc:
            deferred.fail(exc)  # a batch waiting for a forecast fails with it, not for ever
            raise
        finally:
            loading.cancel()  # (a load still running on its thread ends by itself)

    await _serve(settings, processor, metrics, stop, serving=serve_model(),
                 served=deferred.served)


async def _serve(settings: Settings, processor: BatchProcessor, metrics: WorkerMetrics,
                 stop: asyncio.Event | None, *,
                 serving: Coroutine[Any, Any, None] | None = None,
                 served: asyncio.Event | None = None) -> None:
    """Run the engine until `stop`; `serving` (the model's serving path) beside it: when it
    ends with an error the engine stops and the error is raised here. `served`: the engine
    is ready only once it is set."""
    from streams.engine import BatchEngine
    from streams.web import start_worker_web

    counters = StreamCounters()
    engine = BatchEngine(settings, processor, counters, served=served)
    web = await start_worker_web(settings, engine, counters, metrics)  # None without WEB_PORT
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    stopping = stop
    beside = None if serving is None else asyncio.create_task(serving, name="serving")
    if beside is not None:
        beside.add_done_callback(lambda _: stopping.set())

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
        if beside is not None:
            beside.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beside  # its error (a model that did not load) is the worker's


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
