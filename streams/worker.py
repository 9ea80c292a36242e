"""Run one stream worker process: create topics, build the forecaster and the app, serve."""

from __future__ import annotations

import asyncio
import logging

import faust
import numpy as np

from forecasting import Forecaster, QuantileForecast, make_forecaster
from shelfcast.settings import Settings
from streams.app import create_app
from streams.processor import PredictFn
from streams.topics import ensure_topics

__all__ = ["build_app", "local_predict", "run_worker"]


def local_predict(forecaster: Forecaster) -> PredictFn:
    """Adapt a forecaster's batched `predict` to the async call the processor makes."""

    async def predict(windows: np.ndarray, horizon: int) -> QuantileForecast:
        return forecaster.predict(windows, horizon)

    return predict


def build_app(settings: Settings) -> faust.App:
    forecaster = make_forecaster(settings.model)
    return create_app(settings, local_predict(forecaster), forecaster.model_version)


def run_worker(settings: Settings, *, loglevel: str = "info") -> None:
    """Blocks until the worker is stopped (SIGTERM/SIGINT)."""
    asyncio.run(ensure_topics(settings))
    asyncio.set_event_loop(asyncio.new_event_loop())
    app = build_app(settings)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    worker = faust.Worker(app, loglevel=loglevel, logfile=None, quiet=True)
    worker.execute_from_commandline()
