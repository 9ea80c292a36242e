"""The batch worker's start on a real broker: the model loads while the engine joins its group
and recovers, the worker says ready only once the model serves too, and a model whose artifact
does not load stops the worker with that error (no batch left waiting for a forecast)."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from runtime.errors import ConfigError
from runtime.settings import Settings
from streams import worker
from streams.engine import READY_LINE
from streams.topics import ensure_topics

pytestmark = pytest.mark.timeout(120)


def _settings(kafka_bootstrap: str, prefix: str, **fields: Any) -> Settings:
    return Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"{prefix}.",
                    shop_topic_prefix=f"{prefix}.shop.", app_id=f"{prefix}-app",
                    topic_partitions=2, engine="batch", **fields)


async def _until(predicate: Any, timeout_s: float) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def test_the_worker_is_ready_once_recovered_and_its_model_serves(
    kafka_bootstrap: str, fresh_topic_prefix: str, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
):
    settings = _settings(kafka_bootstrap, fresh_topic_prefix, model="moving_average")
    release = threading.Event()
    real_source = worker.model_source

    def slow_source(s: Settings) -> Any:  # a model load that takes until the test says
        assert release.wait(60)
        return real_source(s)

    monkeypatch.setattr(worker, "model_source", slow_source)
    await ensure_topics(settings)  # (`run_worker` does it first)
    caplog.set_level(logging.INFO, logger="streams")
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run_batch_worker(settings, stop))
    try:
        # the engine joins and recovers while the model is still loading ...
        await _until(lambda: "assigned partitions" in caplog.text, 60)
        await asyncio.sleep(0.3)
        assert READY_LINE not in caplog.text
        assert not running.done()
        # ... and is ready once it serves
        release.set()
        await _until(lambda: READY_LINE in caplog.text, 30)
    finally:
        release.set()
        stop.set()
        await asyncio.wait_for(running, 60)
    lines = [r.getMessage() for r in caplog.records]
    assigned = next(i for i, m in enumerate(lines) if "assigned partitions" in m)
    ready = next(i for i, m in enumerate(lines) if READY_LINE in m)
    assert assigned < ready


async def test_a_model_that_does_not_load_stops_the_worker_with_its_error(
    kafka_bootstrap: str, fresh_topic_prefix: str, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
):
    broken = tmp_path / "model"
    broken.mkdir()
    (broken / "metadata.json").write_text("{not json")
    settings = _settings(kafka_bootstrap, fresh_topic_prefix, model="lstm", model_path=broken)
    caplog.set_level(logging.INFO, logger="streams")
    await ensure_topics(settings)
    with pytest.raises(ConfigError, match="cannot load the model"):
        await asyncio.wait_for(worker.run_batch_worker(settings, asyncio.Event()), 90)
    assert READY_LINE not in caplog.text
