"""The LSTM serving on a real broker: a worker SIGKILLed mid-stream and restarted resumes every
SKU's recurrent state from the changelog, so every forecast it (or the dead one) published
equals the forecast of an uninterrupted run. The stream's window is kept short (7 buckets
over 20 days), so a recovery that re-encoded the window would not match (it misses by 1.44).

The batch engine; the Faust engine's twin is tests/integration/test_faust_lstm_recovery.py."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from runtime.faults import FAULT_ENV
from runtime.settings import Settings
from shelfcast.worker_process import WorkerProcess
from streams.lag import LagProbe
from streams.topics import ensure_topics
from tests.support.kafka import produce, wait_lag
from tests.support.lstm import (
    published_means,
    recovery_orders,
    save_tiny_lstm,
    uninterrupted_run,
    worst_difference,
)

torch = pytest.importorskip("torch")

def save_model(directory: Path) -> str:
    return save_tiny_lstm(directory, seed=11, hidden=16, fingerprint="recovery-test")


@pytest.mark.timeout(300)
async def test_a_killed_lstm_worker_resumes_its_states_and_forecasts_as_if_never_stopped(
    kafka_bootstrap: str, fresh_topic_prefix: str, tmp_path: Path
):
    version = save_model(tmp_path / "model")
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"{fresh_topic_prefix}.",
                        shop_topic_prefix=f"{fresh_topic_prefix}.shop.",
                        app_id=f"{fresh_topic_prefix}-app", topic_partitions=4,
                        engine="batch", take_max=150, kafka_session_timeout_s=6,
                        model="lstm", model_path=tmp_path / "model", window_buckets=7,
                        max_wait_ms=1)
    await ensure_topics(settings)
    records = recovery_orders()
    log = tmp_path / "worker.log"
    # mid-stream, at a known step: the first worker kills itself (SIGKILL) in its 10th batch,
    # its outputs acknowledged and its states not yet written (at most 10 x take_max of the
    # orders done). A kill from outside once lagged behind a fast worker that had drained
    # the topic already.
    first = WorkerProcess(settings, log, name="worker-1",
                          env={FAULT_ENV: "worker.mid_batch@10"}).start()
    second = WorkerProcess(settings, log, name="worker-2")
    try:
        await asyncio.to_thread(first.wait_ready, 120)
        async with LagProbe(settings) as probe:
            await produce(settings, settings.topics.orders, records)
            for _ in range(2400):  # up to 120 s
                if not first.alive():
                    break
                await asyncio.sleep(0.05)
            assert first.exit_code() == -signal.SIGKILL, "the armed fault point killed it"
            killed_at_lag = await probe.lag()
            second.start()
            await asyncio.to_thread(second.wait_ready, 120)
            await wait_lag(probe, 0, 150)
    finally:
        first.kill()
        second.stop()
    assert 0 < killed_at_lag < len(records), "the kill should land mid-stream"

    expected, _ = await uninterrupted_run(settings, records)
    versions, got = await published_means(settings)
    assert versions == {version}
    assert got.keys() == expected.keys()
    worst = worst_difference(got, expected)
    assert worst < 1e-3, f"forecasts after recovery differ by up to {worst}"
